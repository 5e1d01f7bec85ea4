#!/usr/bin/env bash
# Runs Tandem's whole test suite: installs what the tests need, runs every test of every crate, then
# the binding suites (Python, Kotlin, Swift syntax) against freshly generated bindings.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo test --workspace --locked "$@"
scripts/test-bindings.sh
