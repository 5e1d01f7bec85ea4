#!/usr/bin/env bash
# Installs what Tandem's tests need on a fresh machine. Idempotent: a second run installs nothing.
# Called by scripts/test.sh; safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

# The JavaScript peers of the interoperability tests (the official automerge-repo packages),
# pinned by tests/js/package-lock.json.
if [ -f tests/js/package-lock.json ]; then
    if [ ! -d tests/js/node_modules ] || [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
        echo "setup: installing the JS test peers (npm ci)"
        (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi

# PostgreSQL on 127.0.0.1:5432 with the tests' role and database (the relay's PostgreSQL tests).
scripts/setup-postgres.sh

# The binding suites (Python, Kotlin, Swift syntax): JNA, pytest and kotlinc. See the script.
scripts/setup-bindings.sh
