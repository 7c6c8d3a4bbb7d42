#!/usr/bin/env bash
# Checks the sdist: it holds every path crate the Python crate builds on (its normal
# dependencies inside the workspace, found with cargo metadata), and `pip install` builds it
# with Rust in a fresh venv from a temporary folder outside the repository, after which it
# imports with the right version.
#
# Usage: tools/dist/check-sdist.sh SDIST VERSION PYTHON
#   CARGO_TARGET_DIR, when set, keeps the build's third-party crates between runs.
set -euo pipefail
sdist=$(realpath "$1") version=$2 python=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-sdist: $*" >&2; exit 1; }

top=imds_cache-$version
listing=$(tar tzf "$sdist")
# The workspace crates the Python crate links (not dev-dependencies), as folders of the repo.
mapfile -t crates < <(cargo metadata --locked --format-version 1 | "$python" -c '
import json, os, sys
meta = json.load(sys.stdin)
root = meta["workspace_root"]
pkgs = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
start = next(p["id"] for p in meta["packages"] if p["name"] == "imds-cache-python")
seen, todo = set(), [start]
while todo:
    for dep in nodes[todo.pop()]["deps"]:
        normal = any(k["kind"] is None for k in dep["dep_kinds"])
        if normal and dep["pkg"] in pkgs and pkgs[dep["pkg"]]["source"] is None and dep["pkg"] not in seen:
            seen.add(dep["pkg"])
            todo.append(dep["pkg"])
for pid in sorted(seen):
    print(os.path.relpath(os.path.dirname(pkgs[pid]["manifest_path"]), root))
')
[ "${#crates[@]}" -gt 0 ] || fail "found no path crate under the Python crate"
for c in "${crates[@]}"; do
    grep -qx "$top/$c/Cargo.toml" <<<"$listing" || fail "the sdist lacks $c/ (a path dependency)"
    grep -q "^$top/$c/src/lib.rs$" <<<"$listing" || fail "the sdist lacks $c/src/lib.rs"
done
grep -qx "$top/Cargo.lock" <<<"$listing" || fail "the sdist has no Cargo.lock"
echo "check-sdist: holds ${crates[*]} and Cargo.lock"

cp "$sdist" "$work/"
cd "$work"
"$python" -m venv venv
venv/bin/python -m pip install --disable-pip-version-check --quiet "./$(basename "$sdist")"
mkdir elsewhere
cd elsewhere
../venv/bin/python - "$version" <<'PY'
import sys

import imds_cache
from imds_cache import ManagedIdentityCredential, TokenCache

if imds_cache.__version__ != sys.argv[1]:
    sys.exit(f"check-sdist: imds_cache.__version__ is {imds_cache.__version__}, expected {sys.argv[1]}")
TokenCache()
print(f"check-sdist: built from the sdist and imported: imds_cache {imds_cache.__version__}")
PY
