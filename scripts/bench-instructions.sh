#!/usr/bin/env bash
# Instructions per operation of the hot paths, under valgrind's callgrind: deterministic enough to
# show a regression of a few percent on a noisy shared machine, where wall-clock figures cannot.
#
#   scripts/bench-instructions.sh                     # every path
#   scripts/bench-instructions.sh sync append         # some paths
#   TANDEM_BENCH_N=100 scripts/bench-instructions.sh  # fewer operations per path (quicker)
#
# Per path it runs tests/benches/instructions.rs twice under callgrind: `<path> <N> setup` (the
# setup alone) and `<path> <N>` (the setup, then N operations), and prints
# (Ir of the full run - Ir of the setup run) / N, with Ir summed over all threads.
# Paths: decode, sync, sync-policy, append, append-file, projection, fetch, fetch-device (see the
# bench file's header).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || {
  echo "valgrind is missing (apt-get install valgrind)" >&2
  exit 1
}

paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(decode sync sync-policy append append-file projection fetch fetch-device)

# Operations per path; the sync path records a device/relay exchange of N rounds in its setup, so
# it gets fewer.
default_n() {
  case "$1" in
    decode) echo 5000 ;;
    sync | sync-policy) echo 300 ;;
    *) echo 1000 ;;
  esac
}

binary=$(cargo bench -p tandem-tests --bench instructions --no-run --message-format=json 2>/dev/null |
  jq -r 'select(.reason == "compiler-artifact" and .target.name == "instructions" and .executable != null) | .executable' |
  tail -n 1)
[ -x "$binary" ] || {
  echo "could not build the instructions bench" >&2
  exit 1
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Total instructions (Ir) of one callgrind run.
instructions() {
  local file="$out/callgrind.$1"
  shift
  valgrind --tool=callgrind --callgrind-out-file="$file" "$binary" "$@" >/dev/null 2>"$file.log" || {
    cat "$file.log" >&2
    return 1
  }
  awk '/^(summary|totals):/ { print $2; exit }' "$file"
}

printf '%-12s %8s %16s %16s %14s\n' path N "setup Ir" "total Ir" "Ir / operation"
for path in "${paths[@]}"; do
  n=${TANDEM_BENCH_N:-$(default_n "$path")}
  setup=$(instructions "$path.setup" "$path" "$n" setup)
  total=$(instructions "$path.full" "$path" "$n")
  per=$(awk -v t="$total" -v s="$setup" -v n="$n" 'BEGIN { printf "%.0f", (t - s) / n }')
  printf '%-12s %8d %16d %16d %14d\n' "$path" "$n" "$setup" "$total" "$per"
done
