#!/usr/bin/env bash
# Runs the binding suites against bindings generated from the library built just now:
# Python (pytest), Kotlin (kotlinc on the JDK, with JNA), and a syntax check of the Swift.
# Expects scripts/setup-bindings.sh to have run (scripts/test.sh does both).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bindings.sh # also builds the relay binary the sync scenarios start
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export TANDEM_SERVER="$target_dir/debug/tandem-server"
generated=bindings/generated
kotlin_home=.tools/kotlin/node_modules/kotlin-compiler
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

timed() {
    local name=$1
    shift
    local start=$SECONDS
    "$@"
    echo "test-bindings: $name passed in $((SECONDS - start)) s"
}

timed python .tools/venv/bin/pytest -q bindings/tests/python

kotlin() {
    "$kotlin_home/bin/kotlinc" -nowarn -cp "/usr/share/java/jna.jar:$kotlin_home/lib/kotlinx-coroutines-core-jvm.jar" \
        "$generated/kotlin/uniffi/tandem/tandem.kt" bindings/tests/kotlin/*.kt -d "$work/kotlin-tests.jar"
    java -Djna.library.path="$generated/kotlin" \
        -cp "$work/kotlin-tests.jar:/usr/share/java/jna.jar:$kotlin_home/lib/kotlin-stdlib.jar:$kotlin_home/lib/kotlinx-coroutines-core-jvm.jar" \
        EngineTestKt
}
timed kotlin kotlin

swift() {
    .tools/venv/bin/python bindings/tests/swift/check_syntax.py "$generated/swift/tandem.swift"
    # The C header Swift imports, with clang's nullability qualifiers defined away for gcc.
    printf '#include "tandemFFI.h"\n' |
        cc -fsyntax-only -D_Nonnull= -D_Nullable= -I"$generated/swift" -x c -
}
timed "swift (syntax only)" swift
