#!/usr/bin/env bash
# The C ABI hit of BENCHMARKS.md (run by `make bench`): builds benches/c_abi_hit.c with gcc -O2
# against the static library (as mk/capi.mk's c-agent target does), starts a fresh emulator
# (1,000 identities, 1,900-byte tokens, throttling off: the Rust driver bench's setup), runs the
# program and writes its JSON line to target/bench/c_abi_hit.json ({"ns_per_call": N, ...}).
# The emulator is stopped whatever happens.
#   C_ABI_RUNS=N C_ABI_ITERS=N   runs per variant (default 11) and calls per run (200000)
# Needs target/release/libimds_cache_ffi.a and target/release/imds-emulator
# (`make capi-lib`; `make bench` builds both).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
CC=${CAPI_CC:-gcc}
OUT=$TARGET/bench
mkdir -p "$OUT" "$TARGET/c"
for f in "$TARGET/release/libimds_cache_ffi.a" "$TARGET/release/imds-emulator"; do
  [ -e "$f" ] || { echo "c_abi_hit: $f is missing (run make capi-lib)" >&2; exit 1; }
done

# What a static libimds_cache.a needs from the system (mk/capi.mk's CAPI_LIBS_PRIVATE).
"$CC" -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wpedantic -Werror -O2 -pthread -Iinclude \
  benches/c_abi_hit.c "$TARGET/release/libimds_cache_ffi.a" \
  -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$TARGET/c/c_abi_hit"

log=$(mktemp)
emulator=
cleanup() {
  if [ -n "$emulator" ]; then
    kill "$emulator" 2>/dev/null || true
    wait "$emulator" 2>/dev/null || true
  fi
  rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$TARGET/release/imds-emulator" --port 0 --identities 1000 --token-size 1900 --throttle off \
  >"$log" 2>/dev/null &
emulator=$!
for _ in $(seq 200); do [ -s "$log" ] && break; sleep 0.05; done
url=$(head -n 1 "$log")
case "$url" in
  http://*) ;;
  *) echo "c_abi_hit: the emulator did not start" >&2; exit 1 ;;
esac

result=$(mktemp)
trap 'cleanup; rm -f "$result"' EXIT
"$TARGET/c/c_abi_hit" "$url" --runs "${C_ABI_RUNS:-11}" --iters "${C_ABI_ITERS:-200000}" | tee "$result"
json=$(tail -n 1 "$result")
case "$json" in
  '{"ns_per_call":'*) printf '%s\n' "$json" >"$OUT/c_abi_hit.json" ;;
  *) echo "c_abi_hit: no result line" >&2; exit 1 ;;
esac
echo "wrote $OUT/c_abi_hit.json"
