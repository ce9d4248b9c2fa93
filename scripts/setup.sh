#!/usr/bin/env bash
# Installs what a fresh Debian machine with the Swift toolchain lacks to build
# and test Junction: pkg-config, libzmq (libzmq3-dev) and jemalloc
# (libjemalloc-dev); for the tests, a
# PostgreSQL server, a headless Chromium with its driver, and pyzmq, selenium
# and schemathesis from
# pip. Idempotent: it only installs what is missing. Needs root (or sudo) the
# first time.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup: need root to run: $*" >&2; exit 1
    fi
}

apt_packages=()
command -v pkg-config >/dev/null 2>&1 || apt_packages+=(pkg-config)
# The TLS tests make their certificate with the openssl command.
command -v openssl >/dev/null 2>&1 || apt_packages+=(openssl)
if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists libzmq; then
    apt_packages+=(libzmq3-dev)
fi
# The gateway links jemalloc as its allocator (Package.swift).
pkg-config --exists jemalloc 2>/dev/null || apt_packages+=(libjemalloc-dev)
# The dashboard is tested in a real headless Chromium, driven through chromedriver.
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || apt_packages+=(chromium-driver)
# The PostgreSQL backend is tested against a real server the tests start (initdb into a temporary directory).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_packages+=(postgresql)
# gdb: a test run that hangs prints every thread's backtrace (scripts/run-tests.sh).
command -v gdb >/dev/null 2>&1 || apt_packages+=(gdb)
if [ ${#apt_packages[@]} -gt 0 ]; then
    echo "setup: installing ${apt_packages[*]} with apt-get"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${apt_packages[@]}"
fi
pkg-config --exists libzmq || { echo "setup: libzmq still not found by pkg-config" >&2; exit 1; }
echo "setup: libzmq $(pkg-config --modversion libzmq) found"

# The tests drive the ZeroMQ adapter with real pyzmq peers.
if ! python3 -c "import zmq" >/dev/null 2>&1; then
    echo "setup: installing pyzmq with pip"
    python3 -m pip install --quiet pyzmq
fi

# The dashboard test drives Chromium with selenium; schemathesis checks the admin API against its OpenAPI document.
if ! python3 -c "import selenium" >/dev/null 2>&1; then
    echo "setup: installing selenium with pip"
    python3 -m pip install --quiet selenium
fi
if ! python3 -c "import schemathesis" >/dev/null 2>&1; then
    echo "setup: installing schemathesis with pip"
    python3 -m pip install --quiet schemathesis
fi
