#!/usr/bin/env bash
# Two gateways on one PostgreSQL database: a producer on A, a consumer group
# with one member on each gateway. Without PG_URL, a throwaway PostgreSQL
# server is started in the example's temporary directory (Debian's
# postgresql, as `make test` installs it) and stopped at the end.
source "$(dirname "$0")/../lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
PG_PORT=${PG_PORT:-7531}
A_PORT=${A_PORT:-7532}
B_PORT=${B_PORT:-7533}

if [ -z "${PG_URL:-}" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -x "$PG_BIN/initdb" ] || { echo "no PostgreSQL server under /usr/lib/postgresql: apt-get install postgresql, or set PG_URL" >&2; exit 1; }
    # PostgreSQL refuses to run as root: as root, its files belong to the postgres user.
    AS=()
    if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); chmod 755 "$WORK"; mkdir "$WORK/pg"; chown postgres "$WORK/pg"; else mkdir "$WORK/pg"; fi
    "${AS[@]}" "$PG_BIN/initdb" -D "$WORK/pg/data" -U junction --auth=trust -E UTF8 --no-sync > "$WORK/initdb.log"
    # A port can be taken between its choice and PostgreSQL binding it (the
    # tests hand out ports the kernel found free): on "could not bind", the
    # start is tried again on a port the kernel finds free now.
    for attempt in 1 2 3 4 5; do
        : > "$WORK/pg/server.log"
        [ "$(id -u)" = 0 ] && chown postgres "$WORK/pg/server.log"
        if "${AS[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w \
            -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $WORK/pg" start > /dev/null 2> "$WORK/pg_ctl.err"; then
            break
        fi
        if [ "$attempt" = 5 ] || ! grep -q "could not bind" "$WORK/pg/server.log"; then
            cat "$WORK/pg_ctl.err" >&2
            tail -n 5 "$WORK/pg/server.log" >&2
            exit 1
        fi
        taken=$PG_PORT
        PG_PORT=$(free_port)
        echo "port $taken is taken: PostgreSQL on port $PG_PORT instead" >&2
    done
    ON_EXIT+=("${AS[*]} $PG_BIN/pg_ctl -D $WORK/pg/data -m fast -w stop")
    "${AS[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U junction junction
    PG_URL="postgres://junction@127.0.0.1:$PG_PORT/junction"
fi
sed "s|postgres://junction@127.0.0.1:7531/junction|$PG_URL|" "$HERE/junction.json" > "$WORK/junction.json"

# gateway NAME DEFAULT_PORT: junction serve with its own data directory (its
# node name comes from it) on the port in NAME_PORT; should that port be
# taken meanwhile, on one the kernel finds free now (NAME_PORT then says which).
gateway() {
    local name=$1 default=$2 variable
    variable=$(echo "$1" | tr a-z A-Z)_PORT
    for attempt in 1 2 3 4 5; do
        copy_config "$HERE/plugins-$name.json" "$default" "${!variable}"
        "$JUNCTION" serve --config "$WORK/junction.json" --plugins "$WORK/plugins-$name.json" --data-dir "$WORK/data-$name" 2> "$WORK/gateway-$name.log" &
        local pid=$!
        BACKGROUND+=("$pid")
        # Until it listens, exits, or 30 s have passed.
        local deadline=$((SECONDS + 30))
        until grep -qsF "[JunctionTCP] listening" "$WORK/gateway-$name.log"; do
            kill -0 "$pid" 2> /dev/null && [ $SECONDS -lt $deadline ] || break
            sleep 0.05
        done
        grep -qsF "[JunctionTCP] listening" "$WORK/gateway-$name.log" && return 0
        if [ "$attempt" = 5 ] || kill -0 "$pid" 2> /dev/null || ! grep -qs "Address already in use" "$WORK/gateway-$name.log"; then
            echo "gateway $name did not start" >&2; tail "$WORK/gateway-$name.log" >&2; exit 1
        fi
        local taken=${!variable}
        printf -v "$variable" '%s' "$(free_port)"
        echo "port $taken is taken: gateway $name on port ${!variable} instead" >&2
    done
}
gateway a 7532
gateway b 7533
echo "--- two gateways on one database: A on :$A_PORT, B on :$B_PORT ---"

# One member of group "workers" on each gateway, printing what it gets.
# Four queues, two each, orders spread round-robin: each member gets ten.
"$JUNCTION" sub --server "127.0.0.1:$A_PORT" --topic orders --group workers --from earliest --count 10 --timeout 30 > "$WORK/on-a.txt" 2> /dev/null &
SUB_A=$!
"$JUNCTION" sub --server "127.0.0.1:$B_PORT" --topic orders --group workers --from earliest --count 10 --timeout 30 > "$WORK/on-b.txt" 2> /dev/null &
SUB_B=$!
BACKGROUND+=("$SUB_A" "$SUB_B")
# The gateways share the group's four queues (leases in the database): wait
# until each says it leases two (its log's last "queues leased" for the group).
leases() { grep "queues leased" "$WORK/gateway-$1.log" | grep "group=workers" | tail -n 1 | grep -o 'queues=\[[0-9, ]*\]' || true; }
deadline=$((SECONDS + 30))
until [ "$(leases a | tr -cd ',')" = "," ] && [ "$(leases b | tr -cd ',')" = "," ]; do
    [ $SECONDS -lt $deadline ] || { echo "the gateways did not share the queues: A $(leases a), B $(leases b)" >&2; exit 1; }
    sleep 0.1
done
echo "--- the group's queues are shared: two on A, two on B ---"

seq 1 20 | sed 's/^/order-/' | "$JUNCTION" pub --server "127.0.0.1:$A_PORT" --topic orders 2>&1
echo "--- published on A; consumed on A and on B ---"
# Each member exits after its ten (exit 1 if --timeout came first).
wait "$SUB_A" || echo "the member on A did not get its ten"
wait "$SUB_B" || echo "the member on B did not get its ten"
echo "member on A: $(wc -l < "$WORK/on-a.txt") orders"
echo "member on B: $(wc -l < "$WORK/on-b.txt") orders"
echo "together: $(cat "$WORK/on-a.txt" "$WORK/on-b.txt" | sort -u | wc -l) distinct of 20, $(cat "$WORK/on-a.txt" "$WORK/on-b.txt" | wc -l) in all"
