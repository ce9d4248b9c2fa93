#!/usr/bin/env bash
# Counts the instructions `junction serve` executes per message on the tcp path,
# with valgrind's callgrind: the same figure on every run of the same build,
# whatever else the machine is doing. Drives the gateway with Benchmarks/c/netbench.
#
#   scripts/instructions-per-message.sh [MESSAGES]     (default 50000)
#
# Needs a release build (swift build -c release --product junction), valgrind
# and .build/netbench (make bench builds it). Prints, per message:
#   publish  oneway publishes, no subscriber (flush=never), until a PING is answered
#   deliver  publish → one subscriber with ack none, minus publish
#   ack      the same with explicit acks, minus ack none
#   deliver to each of 8 subscribers   publish → 8 subscribers (ack none), minus publish, over 8
#   receipt  pipelined publish with receipts, 1024 in flight (flush=always)
# Each count is what the process executes during the load itself, divided by
# MESSAGES: callgrind starts with instrumentation off, a first load of a
# quarter as many messages warms the gateway up (its one-time work: the first
# lookups of protocol conformances, buffers growing to size), then
# instrumentation is on for the measured load and off again before SIGTERM.
# (Until 2026-12-07 a count was the whole process's minus an idle run's: that
# also counted, per message, the one-time work and the shutdown freeing every
# message still cached, about 1,500 instructions a message at 20,000.)
#
# KEEP=DIR keeps the callgrind output of every run in DIR (callgrind_annotate reads it).
# CGX="--separate-threads=yes" passes options to callgrind: with that one, a
# file per thread (KEEP keeps them all; the count is still their sum).
#
#   LOAD=zeromq scripts/instructions-per-message.sh [MESSAGES]
#
# counts ZeroMQ ingest instead: messages PUSHed by .build/zmqbench to a PULL
# plugin, stored with flush=always.
#
#   STORAGE=postgres scripts/instructions-per-message.sh [MESSAGES]
#
# counts the same on the PostgreSQL backend: a scratch server (initdb into the
# temp directory as the postgres user, a free port on 127.0.0.1, fsync on) and
# only the receipt load (publish with receipts to a topic of 8 queues, as the bench's).
set -euo pipefail
messages=${1:-50000}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# valgrind 3.19 cannot read the DWARF 5 that swift emits: count on a copy without it.
# JUNCTION=path counts another build (an older commit's, say) the same way.
objcopy --strip-debug "${JUNCTION:-$root/.build/release/junction}" "$work/junction"
netbench="$root/.build/netbench"

if [ "${STORAGE:-embedded}" = postgres ]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort | tail -1)
    chmod 755 "$work"
    mkdir -p "$work/pg" && chown postgres "$work/pg"
    pgport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    runuser -u postgres -- "$bin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --no-sync > /dev/null
    runuser -u postgres -- "$bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
        -o "-p $pgport -c listen_addresses=127.0.0.1 -k $work/pg -c fsync=on -c synchronous_commit=on" start > /dev/null
    trap 'runuser -u postgres -- "$bin/pg_ctl" -D "$work/pg/data" -m immediate stop > /dev/null; rm -rf "$work"' EXIT
fi

# keep_and_count DIR NAME: with KEEP=DIR set, copies the run's callgrind
# output there (one file, or one per thread with CGX="--separate-threads=yes",
# named alike); prints the instructions counted, summed over the files.
keep_and_count() {
    local dir=$1 name=$2 run=$RANDOM
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && for f in "$dir"/out*; do cp "$f" "$KEEP/$name.$run.${f##*/}"; done; fi
    grep -h '^totals:' "$dir"/out* | awk '{ total += $2 } END { print total }'
}

# count FLUSH [NETBENCH-ARGS...]: instructions of one gateway run.
count() {
    local flush=$1; shift
    local dir="$work/run-$RANDOM"
    mkdir -p "$dir"
    if [ "${STORAGE:-embedded}" = postgres ]; then
        # A database per run; a long timeout, as valgrind slows the gateway down.
        local db="db$RANDOM$RANDOM"
        runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres "$db"
        echo "{\"storage\": {\"backend\": \"postgres\", \"flush\": \"$flush\", \"postgres\": {\"url\": \"postgres://postgres@127.0.0.1:$pgport/$db\", \"poolSize\": 8, \"timeoutMs\": 60000}}, \"topics\": [{\"name\": \"bench\", \"queues\": 8}]}" > "$dir/junction.json"
    else
        echo "{\"storage\": {\"flush\": \"$flush\"}}" > "$dir/junction.json"
    fi
    echo '{"plugins": [{"name": "native", "type": "tcp", "settings": {"listen": "127.0.0.1:0"}}]}' > "$dir/plugins.json"
    valgrind --tool=callgrind ${CGX:-} --instr-atstart=no --callgrind-out-file="$dir/out" "$work/junction" serve \
        --config "$dir/junction.json" --plugins "$dir/plugins.json" --data-dir "$dir/data" > "$dir/log" 2>&1 &
    local pid=$! port="" load=idle
    for _ in $(seq 1 600); do
        port=$(grep -o 'address=127.0.0.1:[0-9]*' "$dir/log" 2>/dev/null | head -1 | cut -d: -f2 || true)
        [ -n "$port" ] && break
        sleep 0.2
    done
    [ -n "$port" ] || { echo "junction serve did not start under valgrind" >&2; tail -5 "$dir/log" >&2; kill "$pid"; exit 1; }
    if [ $# -gt 0 ]; then
        local count=$2
        load=$1
        shift 2
        "$netbench" junction "$port" "$load" $((count / 4)) "$@" > /dev/null
        callgrind_control -i on "$pid" > /dev/null 2>&1
        "$netbench" junction "$port" "$load" "$count" "$@" > /dev/null
        callgrind_control -i off "$pid" > /dev/null 2>&1
    fi
    kill -TERM "$pid"
    wait "$pid" || true
    keep_and_count "$dir" "callgrind.$flush.$load"
}

# ZeroMQ ingest: PUSHed messages (Benchmarks/c/zmqbench) into a PULL plugin,
# stored with flush=always. zmqbench returns once libzmq took the messages,
# so each load is followed by a wait until the gateway's CPU time stops
# moving (what it still stores counts).
count_zeromq() {
    local dir="$work/run-$RANDOM"
    mkdir -p "$dir"
    local zport
    zport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo '{"storage": {"flush": "always"}, "topics": [{"name": "ingest", "queues": 4}]}' > "$dir/junction.json"
    echo "{\"plugins\": [{\"name\": \"zin\", \"type\": \"zeromq\", \"settings\": {\"socket\": \"PULL\", \"bind\": [\"tcp://127.0.0.1:$zport\"], \"topic\": \"ingest\", \"envelope\": \"none\"}}]}" > "$dir/plugins.json"
    valgrind --tool=callgrind ${CGX:-} --instr-atstart=no --callgrind-out-file="$dir/out" "$work/junction" serve \
        --config "$dir/junction.json" --plugins "$dir/plugins.json" --data-dir "$dir/data" > "$dir/log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 600); do grep -q 'bound=tcp' "$dir/log" 2>/dev/null && break; sleep 0.2; done
    grep -q 'bound=tcp' "$dir/log" || { echo "junction serve did not start under valgrind" >&2; tail -5 "$dir/log" >&2; kill "$pid"; exit 1; }
    settle() {
        local before after
        before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        while sleep 1; do
            after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
            [ "$before" = "$after" ] && return
            before=$after
        done
    }
    "$root/.build/zmqbench" push "tcp://127.0.0.1:$zport" $((messages / 4)) 100 > /dev/null
    settle
    callgrind_control -i on "$pid" > /dev/null 2>&1
    "$root/.build/zmqbench" push "tcp://127.0.0.1:$zport" "$messages" 100 > /dev/null
    settle
    callgrind_control -i off "$pid" > /dev/null 2>&1
    kill -TERM "$pid"
    wait "$pid" || true
    keep_and_count "$dir" callgrind.zeromq
}

per() { echo $(( $1 / messages )); }
if [ "${LOAD:-tcp}" = zeromq ]; then
    ingest=$(count_zeromq)
    echo "instructions per message, ZeroMQ ingest ($messages messages of 100 bytes PUSHed to a PULL plugin, after $((messages / 4)) to warm up)"
    echo "ingest  $(per "$ingest")   (received, stored with flush=always)"
    exit 0
fi
if [ "${STORAGE:-embedded}" = postgres ]; then
    receipts=$(count always publish "$messages" 1024)
    echo "instructions per message on PostgreSQL ($messages messages of 100 bytes, after $((messages / 4)) to warm up)"
    echo "receipt  $(per "$receipts")   (publish with receipt, flush=always, whole path)"
    exit 0
fi
publish=$(count never pubsub "$messages" 0 none)
none=$(count never pubsub "$messages" 1 none)
explicit=$(count never pubsub "$messages" 1 explicit)
fanout=$(count never pubsub "$messages" 8 none)
receipts=$(count always publish "$messages" 1024)
echo "instructions per message ($messages messages of 100 bytes, after $((messages / 4)) to warm up)"
echo "publish  $(per "$publish")"
echo "deliver  $(( $(per "$none") - $(per "$publish") ))"
echo "ack      $(( $(per "$explicit") - $(per "$none") ))"
echo "deliver to each of 8 subscribers  $(( ($(per "$fanout") - $(per "$publish")) / 8 ))"
echo "receipt  $(per "$receipts")   (publish with receipt, flush=always, whole path)"
