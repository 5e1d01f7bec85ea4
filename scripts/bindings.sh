#!/usr/bin/env bash
# Builds the tandem-bindings library and generates its Kotlin, Swift and Python bindings from it,
# into bindings/generated/{kotlin,swift,python} (build output, git-ignored).
#
# The generated code checks at load time that it matches the library (a checksum per function),
# so bindings are always regenerated from the library that was just built, never reused.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -p tandem-bindings -p uniffi-bindgen -p tandem-server
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
library="$target_dir/debug/libtandem_bindings.so"

out=bindings/generated
rm -rf "$out"
for language in python kotlin swift; do
    "$target_dir/debug/uniffi-bindgen" generate --no-format --library "$library" \
        --language "$language" --out-dir "$out/$language"
done
# The generated Python and the test suites load the library from beside the bindings.
cp "$library" "$out/python/"
cp "$library" "$out/kotlin/"
echo "bindings: generated $out/{python,kotlin,swift} from $library"
