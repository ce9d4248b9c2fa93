#!/usr/bin/env bash
# Runs the whole suite (`make test`): swift test on the tests already built.
# A run still going after JUNCTION_TEST_LIMIT_SECONDS (default 1800; the suite
# takes about 3 minutes) is a hang: every thread's backtrace of the test
# process is printed, then the run is stopped and fails. CI then shows where
# it hung instead of stopping at its own limit with nothing to go on.
#
# At most JUNCTION_TEST_WIDTH (default 12) tests run at once. Unbounded, Swift
# Testing starts every test together (629 cases here): gateways, PostgreSQL
# servers, browsers and load generators then starve each other on two cores,
# and a test's bounded wait can run out while it waits for a core (2026-12-07:
# two unbounded full runs of four failed so; 12 at once passed three of three,
# each in about 122 s against 130-150 s).
set -uo pipefail
limit=${JUNCTION_TEST_LIMIT_SECONDS:-1800}
# (Swift Testing reads the bound from this variable; a toolchain that does not
# know it runs the tests unbounded, as before, where an unknown flag would fail.)
SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH="${JUNCTION_TEST_WIDTH:-12}" swift test --skip-build "$@" &
tests=$!

backtraces() {
    local process
    for process in $(pgrep -f 'PackageTests\.xctest'); do
        echo "=== threads of the test process $process ==="
        if command -v gdb > /dev/null; then
            timeout 300 gdb -p "$process" -batch -ex 'thread apply all bt' 2>&1 | grep -v '^\[New LWP'
        else
            timeout 300 lldb -p "$process" --batch -o 'thread backtrace all' 2>&1
        fi
    done
}

(
    waited=0
    while kill -0 "$tests" 2> /dev/null; do
        sleep 5
        waited=$((waited + 5))
        if [ "$waited" -ge "$limit" ]; then
            echo "run-tests.sh: the tests are still running after ${limit} s: a hang. Backtraces follow; then the run is stopped." >&2
            backtraces >&2
            pkill -TERM -f 'PackageTests\.xctest'
            kill -TERM "$tests" 2> /dev/null
            sleep 10
            pkill -KILL -f 'PackageTests\.xctest'
            break
        fi
    done
) &
watchdog=$!

wait "$tests"
status=$?
kill "$watchdog" 2> /dev/null
wait "$watchdog" 2> /dev/null
exit "$status"
