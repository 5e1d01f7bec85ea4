#!/usr/bin/env bash
# Installs what the binding suites (bindings/tests/) need on a fresh machine. Idempotent: a second
# run installs nothing. Called by scripts/setup.sh; safe to run by hand.
#
#   - JNA, which the generated Kotlin loads the library through: Debian's libjna-java
#     (/usr/share/java/jna.jar), installed with apt-get only when the jar is missing.
#   - pytest, in a virtualenv under .tools/venv (git-ignored; nothing installed globally).
#   - kotlinc, from the npm package kotlin-compiler (pinned), under .tools/kotlin (git-ignored).
#     It runs on the machine's JDK (17 here).
set -euo pipefail
cd "$(dirname "$0")/.."

KOTLIN_COMPILER_VERSION=2.4.20
PYTEST_VERSION=8.4.2
TOOLS=.tools

if [ ! -f /usr/share/java/jna.jar ]; then
    echo "setup-bindings: installing JNA (libjna-java)"
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libjna-java
fi

if [ ! -x "$TOOLS/venv/bin/pytest" ]; then
    echo "setup-bindings: installing pytest into $TOOLS/venv"
    rm -rf "$TOOLS/venv"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "pytest==$PYTEST_VERSION"
fi

kotlinc="$TOOLS/kotlin/node_modules/kotlin-compiler/bin/kotlinc"
if [ ! -x "$kotlinc" ] || [ "$(cat "$TOOLS/kotlin/.version" 2>/dev/null)" != "$KOTLIN_COMPILER_VERSION" ]; then
    echo "setup-bindings: installing kotlinc $KOTLIN_COMPILER_VERSION (npm kotlin-compiler) into $TOOLS/kotlin"
    rm -rf "$TOOLS/kotlin"
    mkdir -p "$TOOLS/kotlin"
    npm install --prefix "$TOOLS/kotlin" --no-audit --no-fund --loglevel=error --no-save \
        "kotlin-compiler@$KOTLIN_COMPILER_VERSION"
    echo "$KOTLIN_COMPILER_VERSION" > "$TOOLS/kotlin/.version"
fi
