#!/usr/bin/env bash
# producer | junction serve | consumer: stdin lines become durable messages,
# and the messages a filtered subscription gets come out on stdout.
source "$(dirname "$0")/../lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
COUNT=${COUNT:-1000}

python3 "$HERE/producer.py" "$COUNT" \
    | "$JUNCTION" serve --config "$HERE/junction.json" --plugins "$HERE/plugins.json" --data-dir "$WORK/data" 2> "$WORK/gateway.log" \
    | python3 "$HERE/consumer.py"
echo "--- the gateway at the end of input (lines read, made durable, written) ---"
sed -n -E 's/.*junction\.console: (.*) \[JunctionStdio\] input ended: shutting down/\1/p' "$WORK/gateway.log"
