#!/usr/bin/env bash
# `make soak`: the long reliability suite. The same tests as `make test`, scaled
# up by environment variables; the figures they print go to docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export JUNCTION_CRASH_TRIALS=${JUNCTION_CRASH_TRIALS:-50}
export JUNCTION_FUZZ_ITERATIONS=${JUNCTION_FUZZ_ITERATIONS:-1000000}
export JUNCTION_LOAD_CONNECTIONS=${JUNCTION_LOAD_CONNECTIONS:-1000}
export JUNCTION_BACKLOG_MESSAGES=${JUNCTION_BACKLOG_MESSAGES:-10000000}
export JUNCTION_FAILOVER_TRIALS=${JUNCTION_FAILOVER_TRIALS:-10}
log=.build/soak.log
echo "soak: crash trials $JUNCTION_CRASH_TRIALS, fuzz inputs $JUNCTION_FUZZ_ITERATIONS per target, $JUNCTION_LOAD_CONNECTIONS connections, backlog $JUNCTION_BACKLOG_MESSAGES, PostgreSQL failover trials $JUNCTION_FAILOVER_TRIALS (log: $log)"
status=0
swift test --skip-build --no-parallel \
    --filter 'CrashConsistencyTests|TransactionCrashTests|ReliabilityTests|FilterTests/fuzz|FrameCodecTests/fuzz|JSONValueTests/randomBytes|GatewayConfigurationTests/fuzz|DiskFullTests|PostgresFailoverClusterTests' \
    > "$log" 2>&1 || status=$?
grep -E '^(crash-consistency|transactions-crash|fuzz|load|backlog|rolling restart):|^postgres-failover|✘|Test run with' "$log" || true
exit $status
