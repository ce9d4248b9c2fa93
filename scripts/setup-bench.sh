#!/usr/bin/env bash
# Installs the peers `make bench` runs side by side with Junction: nats-server
# (Debian's package). Idempotent; needs root or sudo the first time.
set -euo pipefail
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    echo "setup-bench: installing nats-server with apt-get"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server
fi
# The plain C client that drives both servers in the `cpeers` section.
mkdir -p .build
compiler=${CC:-$(command -v cc || command -v clang || true)}  # the Swift toolchain brings clang
[ -n "$compiler" ] || { echo "setup-bench: no C compiler (cc or clang) for Benchmarks/c/*.c" >&2; exit 1; }
if [ ! -x .build/netbench ] || [ Benchmarks/c/netbench.c -nt .build/netbench ]; then
    "$compiler" -O2 -Wall -pthread -o .build/netbench Benchmarks/c/netbench.c
fi
# The C ZeroMQ PUSH/PULL driver of the ZeroMQ ingest row (links the system libzmq).
if [ ! -x .build/zmqbench ] || [ Benchmarks/c/zmqbench.c -nt .build/zmqbench ]; then
    "$compiler" -O2 -Wall -pthread -o .build/zmqbench Benchmarks/c/zmqbench.c -lzmq
fi
# matplotlib draws the plot of the cpeers section (scripts/plot-bench.py).
if ! python3 -c "import matplotlib" >/dev/null 2>&1; then
    echo "setup-bench: installing matplotlib with pip"
    python3 -m pip install -q matplotlib || pip install -q matplotlib
fi
