#!/usr/bin/env bash
# Starts the emulators the C tests need (IMDS with two user-assigned identities, Arc, and an
# IMDS that answers 503 to everything), then runs each command given, with test_capi's
# arguments appended. Usage: tests/c/run.sh 'CMD…' ['CMD…' …]
set -euo pipefail
cd "$(dirname "$0")/../.."
EMULATOR=${EMULATOR:-./target/release/imds-emulator}
[ -x "$EMULATOR" ] || { echo "run.sh: $EMULATOR is missing (cargo build --release -p imds-emulator)"; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# start NAME ARGS…: runs an emulator, waits for its URL (first line of stdout).
start() {
    local name=$1
    shift
    "$EMULATOR" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    for _ in $(seq 200); do [ -s "$work/$name.out" ] && break; sleep 0.05; done
    head -n 1 "$work/$name.out"
}
imds=$(start imds --identities 2)
mkdir -p "$work/arc-keys"
arc=$(start arc --mode arc --arc-key-dir "$work/arc-keys")
faulty=$(start faulty --fault 'kind=status,status=503')
[ -n "$imds" ] && [ -n "$arc" ] && [ -n "$faulty" ] || { echo "run.sh: an emulator did not start"; exit 1; }
read -r client_id object_id resource_id < <(python3 - "$imds" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/control/identities") as r:
    uai = [i for i in json.load(r)["identities"] if i["kind"] == "user_assigned"][0]
print(uai["client_id"], uai["object_id"], uai["resource_id"])
PY
)
args=("$imds" "$arc/metadata/identity/oauth2/token" "$work/arc-keys" "$faulty" "$client_id" "$object_id" "$resource_id")
for cmd in "$@"; do
    echo "== $cmd"
    # shellcheck disable=SC2086
    $cmd "${args[@]}"
done
