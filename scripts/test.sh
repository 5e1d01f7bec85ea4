#!/usr/bin/env bash
# Runs Tandem's whole test suite: installs what the tests need, runs every test of every crate, then
# the binding suites (Python, Kotlin, Swift syntax) against freshly generated bindings.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# The integration tests start the real `tandem-server` binary as a child process.
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
scripts/test-bindings.sh
