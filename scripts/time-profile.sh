#!/usr/bin/env bash
# Where `junction serve` spends its *time* under load: perf samples of the
# running gateway (cpu-clock, with call graphs), the counterpart of
# scripts/instructions-per-message.sh. Instruction counts do not show cache
# misses, contended locks or time in the kernel; this does (2026-12-07: 9 % of
# the gateway's time went to releasing messages gone cold, which callgrind
# counted as a handful of instructions).
#
#   scripts/time-profile.sh [MESSAGES] [SUBSCRIBERS]   (default 1000000, 1)
#       oneway publishes → SUBSCRIBERS subscribers with ack none (flush=never),
#       driven by .build/netbench
#   LOAD=zeromq scripts/time-profile.sh [MESSAGES]
#       ZeroMQ PUSH → the PULL plugin, stored with flush=always (.build/zmqbench)
#
# Needs a release build, perf (apt-get install linux-perf) and the C drivers
# (make bench builds them). Prints the top symbols by share of the gateway's
# samples and each thread's share, and leaves the samples in
# $OUT (default /tmp/junction-time-profile.data) for `perf report -i`.
# Sampling, unlike callgrind, varies between runs: compare shares, not counts.
# PERFCG="--call-graph dwarf,16384" unwinds through the Swift runtime, which
# has no frame pointers: who calls swift_retain and swift_release shows only so.
set -euo pipefail
messages=${1:-1000000}
subscribers=${2:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/junction-time-profile.data}
junction=${JUNCTION:-$root/.build/release/junction}
command -v perf > /dev/null || { echo "time-profile: perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2> /dev/null; wait 2> /dev/null; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

plugins='{"name": "native", "type": "tcp", "settings": {"listen": "127.0.0.1:0"}}'
if [ "${LOAD:-tcp}" = zeromq ]; then
    zport=$(free_port)
    echo '{"storage": {"flush": "always"}, "topics": [{"name": "ingest", "queues": 4}]}' > "$work/junction.json"
    plugins="$plugins, {\"name\": \"zin\", \"type\": \"zeromq\", \"settings\": {\"socket\": \"PULL\", \"bind\": [\"tcp://127.0.0.1:$zport\"], \"topic\": \"ingest\", \"envelope\": \"none\"}}"
else
    echo '{"storage": {"flush": "never"}}' > "$work/junction.json"
fi
echo "{\"plugins\": [$plugins]}" > "$work/plugins.json"
"$junction" serve --config "$work/junction.json" --plugins "$work/plugins.json" --data-dir "$work/data" > "$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do grep -q 'address=127.0.0.1' "$work/log" && break; sleep 0.05; done
port=$(grep -o 'address=127.0.0.1:[0-9]*' "$work/log" | head -1 | cut -d: -f2)
[ -n "$port" ] || { echo "time-profile: the gateway did not start:" >&2; cat "$work/log" >&2; exit 1; }

load() {
    if [ "${LOAD:-tcp}" = zeromq ]; then
        "$root/.build/zmqbench" push "tcp://127.0.0.1:$zport" "$1" 100 > /dev/null
        # Stored once the gateway's CPU time stops moving.
        local before="" now
        while now=$(awk '{print $14 + $15}' "/proc/$pid/stat"); [ "$now" != "$before" ]; do before=$now; sleep 0.1; done
    else
        "$root/.build/netbench" junction "$port" pubsub "$1" "$subscribers" "${ACK:-none}" > /dev/null
    fi
}

load $((messages / 5))  # warm-up: buffers grown, the recent records filled
perf record ${PERFCG:--g} -F 4999 -e cpu-clock -p "$pid" -o "$out" 2> /dev/null &
recorder=$!
sleep 0.3
load "$messages"
kill -INT "$recorder"
wait "$recorder" || true
# (`head` closes the pipe early: perf's SIGPIPE is no failure here.)
set +o pipefail
echo "## top symbols (share of the gateway's samples)"
perf report -i "$out" --no-children --sort dso,sym --stdio -g none 2> /dev/null | grep '%' | head -30
echo "## threads"
perf report -i "$out" --no-children --sort comm --stdio -g none 2> /dev/null | grep '%' | head
