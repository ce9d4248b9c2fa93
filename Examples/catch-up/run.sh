#!/usr/bin/env bash
# A late ZeroMQ subscriber catches up on what a Junction PUB sent before it
# joined, then follows live: nothing missed, nothing twice.
source "$(dirname "$0")/../lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
TCP_PORT=${TCP_PORT:-7520}
PUB_PORT=${PUB_PORT:-7521}
CATCHUP_PORT=${CATCHUP_PORT:-7522}
copy_config "$HERE/junction.json"
copy_config "$HERE/plugins.json" 7520 "$TCP_PORT" 7521 "$PUB_PORT" 7522 "$CATCHUP_PORT"
start_gateway

echo "--- 5 prices published before anyone subscribed (the PUB sends them to nobody) ---"
seq 1 5 | sed 's/^/early-/' | "$JUNCTION" pub --server "127.0.0.1:$TCP_PORT" --topic prices --tag price 2>&1

echo "--- late_joiner.py joins, catches up, then follows the PUB ---"
python3 "$HERE/late_joiner.py" "tcp://127.0.0.1:$PUB_PORT" "tcp://127.0.0.1:$CATCHUP_PORT" 10 > "$WORK/joiner.out" &
JOINER=$!
BACKGROUND+=("$JOINER")
# Bounded: the joiner says when it has caught up.
for _ in $(seq 1 600); do grep -q "caught up" "$WORK/joiner.out" && break; sleep 0.05; done
seq 1 5 | sed 's/^/late-/' | "$JUNCTION" pub --server "127.0.0.1:$TCP_PORT" --topic prices --tag price 2>&1
wait "$JOINER"
cat "$WORK/joiner.out"
stop_gateway
echo "gateway stopped cleanly"
