#!/usr/bin/env bash
# One ZeroMQ feed fanned out by routes to several topics by tag and property;
# alerts that cannot be handled end in a dead-letter topic, read by a consumer.
source "$(dirname "$0")/../lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
TCP_PORT=${TCP_PORT:-7530}
FEED_PORT=${FEED_PORT:-7531}
copy_config "$HERE/junction.json"
copy_config "$HERE/plugins.json" 7530 "$TCP_PORT" 7531 "$FEED_PORT" '"pager.py"' "\"${HERE//\//\\/}\\/pager.py\""
start_gateway
SERVER=127.0.0.1:$TCP_PORT

python3 "$HERE/feed.py" "$FEED_PORT" 30 2>&1
count() {  # count TOPIC N: reads N messages of TOPIC from the start and prints them on one line, in feed order
    printf '%-13s' "$1:"
    "$JUNCTION" sub --server "$SERVER" --topic "$1" --from earliest --count "$2" --timeout 60 | sort -t'#' -k2n | sed 's/ #[0-9]*$//' | tr '\n' ',' | sed 's/,$/\n/; s/,/, /g'
}
echo "--- routes by tag (each topic in feed order) ---"
count temperature 10
count humidity 10
echo "--- route by tag and property (value > 30 AND site = 'north'): topic alerts, tag hot ---"
count alerts 3
echo "--- pager nacks every alert; after 3 deliveries each moves to %DLQ%pager ---"
"$JUNCTION" sub --server "$SERVER" --topic '%DLQ%pager' --from earliest --count 3 --timeout 60 --format json \
    | python3 "$HERE/dead_letters.py" | sort -t'#' -k2n
stop_gateway
echo "gateway stopped cleanly"
