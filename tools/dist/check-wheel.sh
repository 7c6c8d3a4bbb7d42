#!/usr/bin/env bash
# Installs the x86_64 wheel into a fresh venv on a machine that, as far as the venv can see,
# has no Rust (every PATH folder holding cargo or rustc is dropped, and that is checked), then
# runs the Python end-to-end tests against it: the wheel is all there is.
#
# Usage: tools/dist/check-wheel.sh WHEEL VERSION PYTHON EMULATOR
#   PYTHON: a base interpreter (>= 3.9) to make the venv with; EMULATOR: target/release/imds-emulator
set -euo pipefail
wheel=$(realpath "$1") version=$2 python=$3 emulator=$(realpath "$4")
tests=$(realpath "$(dirname "$0")/../../python/tests")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-wheel: $*" >&2; exit 1; }

clean_path=""
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    [ -n "$d" ] || continue
    if [ -e "$d/cargo" ] || [ -e "$d/rustc" ]; then continue; fi
    clean_path=${clean_path:+$clean_path:}$d
done
venv=$work/venv
"$python" -m venv "$venv"
export PATH=$venv/bin:$clean_path
unset CARGO RUSTC RUSTUP_TOOLCHAIN CARGO_TARGET_DIR VIRTUAL_ENV
if command -v cargo >/dev/null || command -v rustc >/dev/null; then fail "cargo or rustc is still on PATH"; fi

pip=(python -m pip --disable-pip-version-check --quiet)
# --only-binary: should the wheel not fit this interpreter, pip fails rather than build.
"${pip[@]}" install --only-binary imds-cache "$wheel" pytest pytest-asyncio azure-core azure-identity aiohttp cryptography
python - "$venv" "$version" <<'PY'
import sys
from pathlib import Path

import imds_cache
import imds_cache._imds_cache as native

venv, version = Path(sys.argv[1]).resolve(), sys.argv[2]
for module in (imds_cache, native):
    path = Path(module.__file__).resolve()
    if venv not in path.parents:
        sys.exit(f"check-wheel: {module.__name__} comes from {path}, not from the venv")
if imds_cache.__version__ != version:
    sys.exit(f"check-wheel: imds_cache.__version__ is {imds_cache.__version__}, expected {version}")
print(f"check-wheel: imds_cache {imds_cache.__version__} from {Path(native.__file__).name}")
PY
cd "$tests"
IMDS_EMULATOR=$emulator python -m pytest -p no:cacheprovider -q test_credential.py test_aio.py
