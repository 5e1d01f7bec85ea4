#!/usr/bin/env bash
# Makes sure a PostgreSQL server runs on 127.0.0.1:5432 with the role and database the relay's
# PostgreSQL tests use (TANDEM_TEST_DATABASE_URL, default below). Installs PostgreSQL with apt-get if
# it is missing and starts the cluster if it is down. Idempotent and quick when all is in place.
# Needs root (or sudo) for the installation and the cluster; runs without stdin (CI=true).
set -euo pipefail

ROLE=tandem
PASSWORD=tandem
DATABASE=tandem_test
URL="postgres://$ROLE:$PASSWORD@127.0.0.1:5432/$DATABASE"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

as_postgres() {
    if command -v runuser >/dev/null && [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        sudo -n -u postgres "$@"
    fi
}

# Already usable: nothing to do (the common case, a fraction of a second).
if command -v psql >/dev/null && PGCONNECT_TIMEOUT=3 psql "$URL" -XAtqc 'SELECT 1' >/dev/null 2>&1; then
    exit 0
fi

if ! command -v pg_ctlcluster >/dev/null || ! command -v psql >/dev/null; then
    echo "setup: installing PostgreSQL (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

# The newest installed cluster (Debian's layout: one `main` cluster per version).
cluster=$(pg_lsclusters --no-header | sort -k1,1V | tail -n1)
if [ -z "$cluster" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    echo "setup: creating PostgreSQL cluster $version main"
    as_root pg_createcluster "$version" main --port 5432
    cluster=$(pg_lsclusters --no-header | sort -k1,1V | tail -n1)
fi
read -r version name port status _ <<<"$cluster"
if [ "$port" != 5432 ]; then
    echo "setup: PostgreSQL cluster $version $name listens on port $port, not 5432" >&2
    exit 1
fi
if [ "$status" != online ]; then
    echo "setup: starting PostgreSQL cluster $version $name"
    as_root pg_ctlcluster "$version" "$name" start
fi

# The test role (allowed to create the per-test databases) and its database.
as_postgres psql -XAtq -v ON_ERROR_STOP=1 <<SQL
SELECT 'CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD ''$PASSWORD'''
    WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') \gexec
SELECT 'CREATE DATABASE $DATABASE OWNER $ROLE'
    WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DATABASE') \gexec
SQL

if ! PGCONNECT_TIMEOUT=5 psql "$URL" -XAtqc 'SELECT 1' >/dev/null; then
    echo "setup: PostgreSQL runs but $ROLE cannot log in over TCP (check pg_hba.conf)" >&2
    exit 1
fi
echo "setup: PostgreSQL ready at postgres://$ROLE:***@127.0.0.1:5432/$DATABASE"
