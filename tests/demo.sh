#!/usr/bin/env bash
# `make demo`: start the bundled IMDS emulator, then drive the core cache against it.
set -euo pipefail
cd "$(dirname "$0")/.."
IDENTITIES=${IDENTITIES:-20}
out=$(mktemp)
./target/release/imds-emulator --identities "$IDENTITIES" >"$out" 2>/dev/null &
emulator=$!
trap 'kill "$emulator" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
url=$(head -n 1 "$out")
[ -n "$url" ] || { echo "the emulator did not start"; exit 1; }
echo "IMDS emulator at $url with 1 system-assigned and $IDENTITIES user-assigned identities"
mapfile -t client_ids < <(python3 - "$url" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/control/identities") as r:
    for identity in json.load(r)["identities"]:
        if identity["kind"] == "user_assigned":
            print(identity["client_id"])
PY
)
./target/release/examples/sans_io_demo "$url" "${client_ids[@]}"
python3 - "$url" <<'PY'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/control/stats") as r:
    s = json.load(r)
keys = ("requests", "max_starts_in_window", "max_concurrency", "status")
print("emulator saw:", {k: s[k] for k in keys if k in s})
PY
