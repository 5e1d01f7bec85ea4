#!/usr/bin/env bash
# Installs what the binding suites (bindings/tests/) need on a fresh machine. Idempotent: a second
# run installs nothing. Called by scripts/setup.sh; safe to run by hand.
#
#   - JNA, which the generated Kotlin loads the library through: Debian's libjna-java
#     (/usr/share/java/jna.jar), installed with apt-get only when the jar is missing.
#   - pytest, and tree-sitter with its Swift grammar for the syntax check of the generated Swift
#     (no Swift toolchain on this Linux CI), in a virtualenv under .tools/venv (git-ignored).
#   - kotlinc, from the npm package kotlin-compiler (pinned), under .tools/kotlin (git-ignored).
#     It runs on the machine's JDK (17 here).
set -euo pipefail
cd "$(dirname "$0")/.."

KOTLIN_COMPILER_VERSION=2.4.20
PYTHON_TOOLS=("pytest==8.4.2" "tree-sitter==0.25.2" "tree-sitter-swift==0.7.4")
TOOLS=.tools

if [ ! -f /usr/share/java/jna.jar ]; then
    echo "setup-bindings: installing JNA (libjna-java)"
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libjna-java
fi

if [ "$(cat "$TOOLS/venv/.installed" 2>/dev/null)" != "${PYTHON_TOOLS[*]}" ]; then
    echo "setup-bindings: installing ${PYTHON_TOOLS[*]} into $TOOLS/venv"
    rm -rf "$TOOLS/venv"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_TOOLS[@]}"
    echo "${PYTHON_TOOLS[*]}" > "$TOOLS/venv/.installed"
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
