#!/usr/bin/env bash
# Runs Tandem's whole test suite: installs what the tests need, then runs every test of every crate.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo test --workspace --locked "$@"
