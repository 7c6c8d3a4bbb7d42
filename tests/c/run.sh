#!/usr/bin/env bash
# Starts the emulators the C tests need (IMDS with two user-assigned identities, Arc, and an
# IMDS that answers 503 to everything), then runs each command given, with test_capi's
# arguments appended. The emulators are stopped whatever happens.
# Usage: tests/c/run.sh 'CMD…' ['CMD…' …]
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib/emulator.sh
work=$(mktemp -d)
cleanup() {
    emulator_stop_all
    rm -rf "$work"
}
trap cleanup EXIT

emulator_start imds --identities 2
mkdir -p "$work/arc-keys"
emulator_start arc --mode arc --arc-key-dir "$work/arc-keys"
emulator_start faulty --fault 'kind=status,status=503'
read -r client_id object_id resource_id < <(python3 - "$imds" <<'PY'
import json, sys, urllib.request
no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
with no_proxy.open(sys.argv[1] + "/control/identities") as r:
    uai = [i for i in json.load(r)["identities"] if i["kind"] == "user_assigned"][0]
print(uai["client_id"], uai["object_id"], uai["resource_id"])
PY
)
[ -n "${resource_id:-}" ] || { echo "run.sh: the emulator listed no user-assigned identity"; exit 1; }
args=("$imds" "$arc/metadata/identity/oauth2/token" "$work/arc-keys" "$faulty" "$client_id" "$object_id" "$resource_id")
for cmd in "$@"; do
    echo "== $cmd"
    # shellcheck disable=SC2086
    $cmd "${args[@]}"
done
