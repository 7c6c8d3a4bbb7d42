"""Fails when any release artifact or versioned file disagrees with the one version.

The version is written once, as `version` under [workspace.package] in the root Cargo.toml.
Everything else must follow from it: every workspace crate (version.workspace), the version
requirements of the workspace's own crates in [workspace.dependencies] (cargo cannot inherit
those), the Python package (maturin reads Cargo; pyproject.toml must keep `dynamic`), the
header's IMDS_CACHE_VERSION, and in dist/: the wheels' and sdist's names and metadata, the C
tarballs' names, top folders, headers and .pc files, and SHA256SUMS over exactly those files.

Usage: python tools/dist/check_versions.py DIST_DIR [--expect VERSION] [--self-test]
  --expect      checks against VERSION instead of Cargo.toml's
  --self-test   makes one drift at a time in a copy of DIST_DIR (a .pc file, a header, the
                wheel's METADATA, the sdist's PKG-INFO) and fails unless each is found alone
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
ARCHES = ("x86_64", "aarch64")
OWN_CRATES = ("imds-cache", "imds-cache-client")

problems: list[str] = []


def check(ok: bool, what: str) -> None:
    if not ok:
        problems.append(what)


def workspace_version() -> str:
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    return manifest["workspace"]["package"]["version"]


def check_sources(version: str) -> None:
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    for name in OWN_CRATES:
        dep = manifest["workspace"]["dependencies"].get(name)
        if dep is not None:
            check(dep.get("version") == version,
                  f"[workspace.dependencies] {name} requires version {dep.get('version')!r}")
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--locked", "--no-deps", "--format-version", "1"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout)
    for package in meta["packages"]:
        check(package["version"] == version,
              f"crate {package['name']} has version {package['version']}")
    project = tomllib.loads((ROOT / "python/pyproject.toml").read_text())["project"]
    check("version" not in project and "version" in project.get("dynamic", []),
          "python/pyproject.toml must take its version from Cargo (dynamic = [\"version\"])")
    header = (ROOT / "include/imds_cache.h").read_text()
    check(f'#define IMDS_CACHE_VERSION "{version}"' in header.splitlines(),
          "include/imds_cache.h: IMDS_CACHE_VERSION differs")
    # Doc comments quote the version too (imds_cache_version's): any other "x.y.z" is a drift.
    others = sorted(set(re.findall(r'"(\d+\.\d+\.\d+[0-9A-Za-z.+-]*)"', header)) - {version})
    check(not others, f"include/imds_cache.h quotes other versions: {others}")


def metadata_version(text: str) -> str | None:
    found = re.search(r"^Version: (.+)$", text, re.M)
    return found.group(1).strip() if found else None


def check_python(dist: Path, version: str) -> list[Path]:
    py = str(Version(version))  # PEP 440 form, as maturin writes it (0.2.0-rc.1 -> 0.2.0rc1)
    stem = py.replace("-", "_")
    files = []
    for arch in ARCHES:
        wheels = sorted(dist.glob(f"imds_cache-*-cp39-abi3-*{arch}.whl"))
        check(len(wheels) == 1, f"want one {arch} wheel, found {[w.name for w in wheels]}")
        for wheel in wheels:
            files.append(wheel)
            check(wheel.name.startswith(f"imds_cache-{stem}-"), f"{wheel.name}: not version {py}")
            with zipfile.ZipFile(wheel) as z:
                infos = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
                meta = z.read(infos[0]).decode() if len(infos) == 1 else ""
            check(metadata_version(meta) == py, f"{wheel.name}: METADATA says {metadata_version(meta)}")
    sdists = sorted(dist.glob("imds_cache-*.tar.gz"))
    check([s.name for s in sdists] == [f"imds_cache-{stem}.tar.gz"], f"sdists: {[s.name for s in sdists]}")
    for sdist in sdists:
        files.append(sdist)
        top = sdist.name.removesuffix(".tar.gz")
        with tarfile.open(sdist) as tar:
            pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
            cargo = tomllib.loads(tar.extractfile(f"{top}/Cargo.toml").read().decode())
        check(metadata_version(pkg_info) == py, f"{sdist.name}: PKG-INFO says {metadata_version(pkg_info)}")
        cargo_version = cargo["workspace"]["package"]["version"]
        check(cargo_version == version, f"{sdist.name}: its Cargo.toml says {cargo_version}")
    return files


def check_c(dist: Path, version: str) -> list[Path]:
    files = []
    top = f"imds-cache-{version}"
    for arch in ARCHES:
        tarball = dist / f"{top}-{arch}-linux-gnu.tar.gz"
        check(tarball.is_file(), f"missing {tarball.name}")
        if not tarball.is_file():
            continue
        files.append(tarball)
        with tarfile.open(tarball) as tar:
            tops = {m.name.split("/")[0] for m in tar.getmembers()}
            check(tops == {top}, f"{tarball.name}: top folders {sorted(tops)}")
            read = lambda p: tar.extractfile(f"{top}/{p}").read().decode()  # noqa: E731
            check(f'#define IMDS_CACHE_VERSION "{version}"' in read("include/imds_cache.h").splitlines(),
                  f"{tarball.name}: the header's IMDS_CACHE_VERSION differs")
            for pc in ("imds_cache.pc", "imds_cache-static.pc"):
                check(f"Version: {version}" in read(f"lib/pkgconfig/{pc}").splitlines(),
                      f"{tarball.name}: {pc} has another Version")
            check(f"imds-cache {version} " in read("README"), f"{tarball.name}: README names another version")
    others = sorted(p.name for p in dist.glob("imds-cache-*.tar.gz") if p not in files)
    check(not others, f"C tarballs of another version: {others}")
    return files


def check_sums(dist: Path, files: list[Path]) -> None:
    sums = dist / "SHA256SUMS"
    check(sums.is_file(), "missing SHA256SUMS")
    if not sums.is_file():
        return
    listed = {}
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    want = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    check(listed == want, f"SHA256SUMS lists {sorted(listed)} (want {sorted(want)}) or a digest differs")
    stray = sorted(p.name for p in dist.iterdir() if p.name != "SHA256SUMS" and p.name not in want)
    check(not stray, f"dist/ holds files that are not release artifacts: {stray}")


def check_dist(dist: Path, version: str) -> list[str]:
    problems.clear()
    files = check_python(dist, version) + check_c(dist, version)
    check_sums(dist, files)
    return list(problems)


def rewrite(archive: Path, member_suffix: str, edit) -> None:  # type: ignore[no-untyped-def]
    """Rewrites the one member of a .whl or .tar.gz whose name ends with member_suffix."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            items = [(i, z.read(i)) for i in z.infolist()]
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for info, data in items:
                z.writestr(info, edit(data) if info.filename.endswith(member_suffix) else data)
        return
    with tarfile.open(archive) as tar:
        items = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in items:
            if data is not None and info.name.endswith(member_suffix):
                data = edit(data)
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def self_test(dist: Path, version: str) -> None:
    """Each drift, made alone in a copy of dist/ (SHA256SUMS rewritten to match), is found."""
    other = f"{version}9"
    bump = lambda data: data.replace(version.encode(), other.encode())  # noqa: E731
    cases = [
        ("imds-cache-*-x86_64-linux-gnu.tar.gz", "lib/pkgconfig/imds_cache.pc", "imds_cache.pc"),
        ("imds-cache-*-aarch64-linux-gnu.tar.gz", "include/imds_cache.h", "IMDS_CACHE_VERSION"),
        ("imds_cache-*x86_64.whl", ".dist-info/METADATA", "METADATA"),
        ("imds_cache-*.tar.gz", "/PKG-INFO", "PKG-INFO"),
    ]
    for pattern, member, expected in cases:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp)
            for f in dist.iterdir():
                shutil.copy2(f, copy / f.name)
            (target,) = copy.glob(pattern)
            rewrite(target, member, bump)
            sums = [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}"
                    for f in sorted(copy.iterdir()) if f.name != "SHA256SUMS"]
            (copy / "SHA256SUMS").write_text("\n".join(sums) + "\n")
            found = check_dist(copy, version)
            if len(found) != 1 or expected not in found[0]:
                sys.exit(f"check_versions --self-test: {member} of {target.name} at {other}: got {found}")
    problems.clear()
    print(f"check_versions: self-test: each of {len(cases)} single drifts is found alone")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dist", type=Path)
    parser.add_argument("--expect")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    version = args.expect or workspace_version()
    if args.self_test:
        self_test(args.dist, version)
        return
    check_sources(version)
    sources = list(problems)
    found = sources + check_dist(args.dist, version)
    if found:
        sys.exit("check_versions: version " + version + " drifted:\n  " + "\n  ".join(found))
    print(f"check_versions: dist/ (wheels, sdist, C tarballs, SHA256SUMS), the crates, the header "
          f"and pyproject.toml: all {version}")


if __name__ == "__main__":
    main()
