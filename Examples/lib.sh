# Shared by the examples' run.sh scripts (sourced, not run).
#
# JUNCTION names the junction binary; without it the release build of this
# repository is used (set up and built first if needed). Each example's ports
# have defaults and can be overridden by environment variables (the tests give
# kernel-chosen ports). Everything runs in a temporary directory that is
# removed at the end, gateway and helpers included.
set -euo pipefail

EXAMPLES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$EXAMPLES")
if [ -z "${JUNCTION:-}" ]; then
    JUNCTION=$ROOT/.build/release/junction
    if [ ! -x "$JUNCTION" ]; then
        echo "building junction (release) first: make -C $ROOT build" >&2
        make -C "$ROOT" build >&2
    fi
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/junction-example.XXXXXX")
BACKGROUND=()
# Commands run at the end, after the background processes stopped (a database server, say).
ON_EXIT=()

finish() {
    local status=$?
    for pid in "${BACKGROUND[@]}"; do kill "$pid" 2>/dev/null || true; done
    # A helper that does not stop on SIGTERM within 5 s is killed.
    local deadline=$((SECONDS + 5))
    for pid in "${BACKGROUND[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for command in "${ON_EXIT[@]}"; do $command > /dev/null 2>&1 || true; done
    if [ $status -ne 0 ] && [ -f "$WORK/gateway.log" ]; then
        echo "--- gateway log ($WORK/gateway.log) ---" >&2
        tail -n 30 "$WORK/gateway.log" >&2
    fi
    rm -rf "$WORK"
}
trap finish EXIT

# free_port: a port on 127.0.0.1 the kernel finds free now (a random high
# one without python3).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2> /dev/null \
        || echo $((20000 + RANDOM % 20000))
}

# copy_config FILE [DEFAULT_PORT PORT]...: a copy of FILE in $WORK with the
# default ports replaced by the ones in use.
copy_config() {
    local file=$1; shift
    local script=""
    while [ $# -ge 2 ]; do script+="s/$1/$2/g;"; shift 2; done
    sed -e "${script:-p;d}" "$file" > "$WORK/$(basename "$file")"
}

# start_gateway: junction serve on $WORK's configs, in the background, logging
# to $WORK/gateway.log; returns once it serves and its sockets are bound.
start_gateway() {
    "$JUNCTION" serve --config "$WORK/junction.json" --plugins "$WORK/plugins.json" --data-dir "$WORK/data" \
        2> "$WORK/gateway.log" &
    GATEWAY_PID=$!
    BACKGROUND+=("$GATEWAY_PID")
    wait_for_log "serving"
    # Plugins start after the core: wait until each socket is bound.
    if grep -q '"type": "tcp"' "$WORK/plugins.json"; then wait_for_log "[JunctionTCP] listening"; fi
    if grep -q '"type": "zeromq"' "$WORK/plugins.json"; then wait_for_log "[JunctionZeroMQ] listening"; fi
}

# wait_for_log TEXT [SECONDS]: until the gateway log has TEXT (30 s by default).
wait_for_log() {
    local deadline=$((SECONDS + ${2:-30}))
    until grep -qF -- "$1" "$WORK/gateway.log" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then echo "the gateway did not log '$1' in time" >&2; return 1; fi
        if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then echo "the gateway exited" >&2; return 1; fi
        sleep 0.05
    done
}

# stop_gateway: SIGTERM, and wait for the graceful stop.
stop_gateway() {
    kill -TERM "$GATEWAY_PID"
    wait "$GATEWAY_PID"
}

# wait_until_consumed SERVER GROUP: until every queue of GROUP has lag 0 and
# nothing in flight (30 s at most).
wait_until_consumed() {
    local deadline=$((SECONDS + 30))
    until "$JUNCTION" groups list --server "$1" --group "$2" \
        | awk -F'\t' 'NR > 1 && ($6 != 0 || $7 != 0) { busy = 1 } NR > 1 { rows++ } END { exit !(rows > 0 && !busy) }'; do
        if [ $SECONDS -ge $deadline ]; then echo "group $2 did not catch up in time" >&2; return 1; fi
        sleep 0.05
    done
}
