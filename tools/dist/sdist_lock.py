"""Prunes the Cargo.lock of a maturin sdist in place.

`maturin sdist` drops the workspace members the wheel does not need (benches/) from the
sdist's Cargo.toml but copies Cargo.lock unchanged, so a build with `locked = true`
(python/pyproject.toml) fails: "cannot update the lock file ... because --locked was passed".
This lets cargo drop the lock entries nothing in the sdist uses, checks that it only dropped
whole entries (every pin that is left is the one from the repository), and rewrites the sdist
with the new lock and everything else as it was (a package's list of dependencies may shrink,
as features only the dropped members enabled go). A lock that needs no change is left alone.

Usage: python tools/dist/sdist_lock.py SDIST.tar.gz
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path


def entries(lock: bytes) -> dict[tuple[str, str], dict[str, object]]:
    packages = tomllib.loads(lock.decode())["package"]
    return {(p["name"], p["version"]): p for p in packages}


def same_pin(old: dict[str, object], new: dict[str, object]) -> bool:
    """The same version, source and checksum, and no dependency the repository's lock did not
    list: the list may shrink, as features that only the dropped members enabled go (and a
    dependency's version suffix goes when one version of it is left)."""
    deps = lambda p: {d.split()[0] for d in p.get("dependencies", [])}  # noqa: E731
    return (
        all(old.get(f) == new.get(f) for f in ("version", "source", "checksum"))
        and deps(new) <= deps(old)
    )


def pruned_lock(sdist: Path) -> tuple[str, bytes, bytes]:
    """(member name of Cargo.lock, the lock as shipped, the lock cargo wants)."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(sdist) as tar:
        tar.extractall(tmp, filter="data")
        (top,) = Path(tmp).iterdir()
        lock = top / "Cargo.lock"
        before = lock.read_bytes()
        for offline in (["--offline"], []):
            run = subprocess.run(
                ["cargo", "metadata", "--format-version", "1", *offline,
                 "--manifest-path", str(top / "Cargo.toml")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            if run.returncode == 0:
                break
        else:
            sys.exit(f"sdist_lock: cargo metadata failed in the sdist:\n{run.stderr}")
        return f"{top.name}/Cargo.lock", before, lock.read_bytes()


def main() -> None:
    sdist = Path(sys.argv[1])
    member, before, after = pruned_lock(sdist)
    if before == after:
        print(f"sdist_lock: {sdist.name}: Cargo.lock already matches")
        return
    old, new = entries(before), entries(after)
    changed = [k for k, v in new.items() if k not in old or not same_pin(old[k], v)]
    if changed:
        sys.exit(f"sdist_lock: cargo changed pins, not only dropped entries: {changed}")
    with tarfile.open(sdist) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, tarfile.open(
        fileobj=gz, mode="w", format=tarfile.PAX_FORMAT
    ) as tar:
        for info, data in members:
            if info.name == member:
                data = after
                info.size = len(after)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    sdist.write_bytes(out.getvalue())
    print(f"sdist_lock: {sdist.name}: dropped {len(old) - len(new)} unused Cargo.lock entries")


if __name__ == "__main__":
    main()
