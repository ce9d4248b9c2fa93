#!/usr/bin/env bash
# A ZeroMQ PUB sensor feed bridged into the durable topic `sensors`, read by a
# TCP consumer group with explicit acks and a tag filter.
source "$(dirname "$0")/../lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
TCP_PORT=${TCP_PORT:-7510}
SENSOR_PORT=${SENSOR_PORT:-7511}
copy_config "$HERE/junction.json"
copy_config "$HERE/plugins.json" 7510 "$TCP_PORT" 7511 "$SENSOR_PORT"

python3 "$HERE/sensor.py" "$SENSOR_PORT" &
BACKGROUND+=($!)
start_gateway
echo "gateway up: SUB connected to the sensor's PUB on tcp://127.0.0.1:$SENSOR_PORT, topic sensors"

echo "--- group dashboard, tags 'temperature || humidity', explicit acks: 12 readings ---"
"$JUNCTION" sub --server "127.0.0.1:$TCP_PORT" --topic sensors --tags 'temperature || humidity' \
    --group dashboard --from earliest --count 12 --timeout 60 \
    | python3 "$HERE/show.py"

echo "--- the group's committed offsets (acked readings are consumed) ---"
"$JUNCTION" groups list --server "127.0.0.1:$TCP_PORT" --group dashboard
stop_gateway
echo "gateway stopped cleanly"
