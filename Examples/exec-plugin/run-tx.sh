#!/usr/bin/env bash
# The exec plugin with transactions (enrich-tx.py): each enriched copy and the
# ack of its original are committed together.
source "$(dirname "$0")/../lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
TCP_PORT=${TCP_PORT:-7520}
copy_config "$HERE/junction.json"
copy_config "$HERE/plugins-tx.json" 7520 "$TCP_PORT" '"enrich-tx.py"' "\"${HERE//\//\\/}\\/enrich-tx.py\""
mv "$WORK/plugins-tx.json" "$WORK/plugins.json"
start_gateway
SERVER=127.0.0.1:$TCP_PORT

echo "--- publishing 5 orders to topic orders (tag created) ---"
printf 'order %s\n' 1 2 3 4 5 | "$JUNCTION" pub --server "$SERVER" --topic orders --tag created 2>&1
echo "--- what enrich-tx.py committed to orders-enriched ---"
"$JUNCTION" sub --server "$SERVER" --topic orders-enriched --from earliest --count 5 --timeout 60 --format json \
    | python3 "$HERE/show.py"
echo "--- the group: every original acked by its transaction's commit ---"
wait_until_consumed "$SERVER" enrich
"$JUNCTION" groups list --server "$SERVER" --group enrich
echo "--- open transactions: none ---"
"$JUNCTION" tx list --server "$SERVER"
stop_gateway
echo "--- the child's stderr, in the gateway log ---"
grep -c 'enriched [0-9a-f]* in transaction [0-9a-f]*' "$WORK/gateway.log" | sed 's/$/ lines "enriched <id> in transaction <id>"/'
