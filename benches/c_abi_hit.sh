#!/usr/bin/env bash
# The C ABI hit of BENCHMARKS.md (run by `make bench`): builds benches/c_abi_hit.c with gcc -O2
# against the static library (as mk/capi.mk's c-agent target does), starts a fresh emulator
# (1,000 identities, 1,900-byte tokens, throttling off: the Rust driver bench's setup), runs the
# program, then C_ABI_PAIRS (3) paired rounds of the Rust driver bench and the C program back to
# back, and writes target/bench/c_abi_hit.json ({"ns_per_call": N, ..., "paired": {...}}).
# The emulator is stopped whatever happens.
#   C_ABI_RUNS=N C_ABI_ITERS=N   runs per variant (default 11) and calls per run (200000)
#   C_ABI_PAIRS=N                paired rounds for the target's ratio (default 3)
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

. tests/lib/emulator.sh
result=$(mktemp)
cleanup() {
  emulator_stop_all
  rm -f "$result"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
EMULATOR=$TARGET/release/imds-emulator
emulator_start url --port 0 --identities 1000 --token-size 1900 --throttle off

"$TARGET/c/c_abi_hit" "$url" --runs "${C_ABI_RUNS:-11}" --iters "${C_ABI_ITERS:-200000}" | tee "$result"
json=$(tail -n 1 "$result")
case "$json" in
  '{"ns_per_call":'*) ;;
  *) echo "c_abi_hit: no result line" >&2; exit 1 ;;
esac

# Paired rounds for the target (C ÷ Rust, 1 thread, same key): this machine's load drifts over
# minutes, so the Rust driver bench (criterion) and the C program run back to back, C_ABI_PAIRS
# times; the target's ratio is the median of the rounds' ratios. Each round's criterion run
# replaces target/criterion/driver_hit/same_key/1_threads (the last round's stays).
pairs=${C_ABI_PAIRS:-3}
estimates=$TARGET/criterion/driver_hit/same_key/1_threads/new/estimates.json
c_ns=() rust_ns=()
for round in $(seq "$pairs"); do
  echo "paired round $round of $pairs"
  cargo bench --locked -q -p imds-cache-benches --bench driver_hit -- \
    'driver_hit/same_key/1_threads' --warm-up-time 0.5 --measurement-time 2 >"$result" 2>&1 ||
    { cat "$result" >&2; echo "c_abi_hit: the Rust driver bench failed" >&2; exit 1; }
  rust_ns+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' "$estimates")")
  "$TARGET/c/c_abi_hit" "$url" --runs 5 --iters "${C_ABI_ITERS:-200000}" >"$result"
  c_ns+=("$(tail -n 1 "$result" | python3 -c 'import json,sys; print(json.load(sys.stdin)["same_key_1_threads"])')")
  echo "  Rust driver ${rust_ns[-1]} ns, C ABI ${c_ns[-1]} ns"
done
python3 - "$json" "${c_ns[*]}" "${rust_ns[*]}" >"$OUT/c_abi_hit.json" <<'PY'
import json, statistics, sys
out = json.loads(sys.argv[1])
c = [float(v) for v in sys.argv[2].split()]
rust = [float(v) for v in sys.argv[3].split()]
out["paired"] = {"c_ns": c, "rust_ns": rust,
                 "ratio": statistics.median(a / b for a, b in zip(c, rust))}
print(json.dumps(out))
PY
cat "$OUT/c_abi_hit.json"
echo "wrote $OUT/c_abi_hit.json"
