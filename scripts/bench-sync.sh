#!/usr/bin/env bash
# Sync figures: Tandem's relay against the official automerge-repo JS sync server on loopback.
# Builds the release relay, then runs tests/benches/sync.rs, which prints a table.
#
#   scripts/bench-sync.sh
#   TANDEM_BENCH_IDLE_DOCS=1000 TANDEM_BENCH_SUBSCRIBERS=50 scripts/bench-sync.sh   # a quick run
#
# Sizes: TANDEM_BENCH_FRESH_DOCS (1000), TANDEM_BENCH_IDLE_DOCS (10000), TANDEM_BENCH_CHANGED_DOCS (10), TANDEM_BENCH_SUBSCRIBERS
# (500), TANDEM_BENCH_LATENCY_DOCS (50), TANDEM_BENCH_ROUNDS (100), TANDEM_BENCH_DELAY_MS (0: a
# simulated round trip for frames from the server), TANDEM_BENCH_TIMEOUT_SECS (120,
# per workload), TANDEM_BENCH_SERVERS (both | tandem | js); the load workloads:
# TANDEM_BENCH_FANOUT_DOCS (1000, two devices each), TANDEM_BENCH_FANOUT_ROUNDS (5),
# TANDEM_BENCH_IDLE_CONNECTIONS (2000), TANDEM_BENCH_HOT_DOCS (1000), TANDEM_BENCH_INGEST_WRITERS
# (500), TANDEM_BENCH_INGEST_SECS (10), TANDEM_BENCH_INGEST_RATE (50 changes/s per writer, workload
# 7); TANDEM_BENCH_WORKLOADS (1,2,3,4,5,6,7) picks workloads; TANDEM_BENCH_SKETCH=0 makes the bench
# devices Tandem peers from before the reconnect digest's sketch (the bucket exchange, a baseline).
# Needs node and scripts/setup.sh's tests/js/node_modules.
set -euo pipefail
# 2,000 client sockets in the bench process and as many in the server it starts (which inherits
# this limit): raise the soft open-file limit if it is low.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 8192 2>/dev/null || true
fi
cd "$(dirname "$0")/.."
if [ ! -d tests/js/node_modules/@automerge/automerge-repo-network-websocket ]; then
  echo "tests/js/node_modules is missing: run scripts/setup.sh first" >&2
  exit 1
fi
cargo build --release -p tandem-server --bin tandem-server
exec cargo bench -p tandem-tests --bench sync
