#!/usr/bin/env bash
# Sync figures: Tandem's relay against the official automerge-repo JS sync server on loopback.
# Builds the release relay, then runs tests/benches/sync.rs, which prints a table.
#
#   scripts/bench-sync.sh
#   TANDEM_BENCH_IDLE_DOCS=1000 TANDEM_BENCH_SUBSCRIBERS=50 scripts/bench-sync.sh   # a quick run
#
# Sizes: TANDEM_BENCH_FRESH_DOCS (1000), TANDEM_BENCH_IDLE_DOCS (10000), TANDEM_BENCH_SUBSCRIBERS
# (500), TANDEM_BENCH_LATENCY_DOCS (50), TANDEM_BENCH_ROUNDS (100), TANDEM_BENCH_TIMEOUT_SECS (120,
# per workload), TANDEM_BENCH_SERVERS (both | tandem | js). Needs node and scripts/setup.sh's
# tests/js/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d tests/js/node_modules/@automerge/automerge-repo-network-websocket ]; then
  echo "tests/js/node_modules is missing: run scripts/setup.sh first" >&2
  exit 1
fi
cargo build --release -p tandem-server --bin tandem-server
exec cargo bench -p tandem-tests --bench sync
