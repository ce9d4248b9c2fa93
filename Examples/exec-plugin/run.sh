#!/usr/bin/env bash
# An exec plugin (enrich.py) consumes `orders`, publishes an enriched copy of
# each to `orders-enriched` and acks the original.
source "$(dirname "$0")/../lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
TCP_PORT=${TCP_PORT:-7520}
copy_config "$HERE/junction.json"
copy_config "$HERE/plugins.json" 7520 "$TCP_PORT" '"enrich.py"' "\"${HERE//\//\\/}\\/enrich.py\""
start_gateway
SERVER=127.0.0.1:$TCP_PORT

echo "--- publishing 5 orders to topic orders (tag created) and 1 with tag cancelled ---"
printf 'order %s\n' 1 2 3 4 5 | "$JUNCTION" pub --server "$SERVER" --topic orders --tag created 2>&1
"$JUNCTION" pub --server "$SERVER" --topic orders --tag cancelled "order 6" 2>&1 | sed -E 's/ [0-9a-f]{24} / <id> /' 
echo "--- what enrich.py published to orders-enriched ---"
"$JUNCTION" sub --server "$SERVER" --topic orders-enriched --from earliest --count 5 --timeout 60 --format json \
    | python3 "$HERE/show.py"
echo "--- the exec plugin's group: everything acked (order 6 filtered out, not delivered) ---"
wait_until_consumed "$SERVER" enrich
"$JUNCTION" groups list --server "$SERVER" --group enrich
stop_gateway
echo "--- the child's stderr, in the gateway log ---"
grep -c 'enriched [0-9a-f]*' "$WORK/gateway.log" | sed 's/$/ lines "enriched <id>"/'
