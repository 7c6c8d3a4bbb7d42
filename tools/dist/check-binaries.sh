#!/usr/bin/env bash
# Checks what one architecture's wheel and C tarball hold, without running them (the aarch64
# pair cannot run here): every ELF file is for ARCH, asks for no glibc symbol newer than
# GLIBC, and the wheel passes `auditwheel show` as manylinux_GLIBC_ARCH with nothing to vendor.
#
# Usage: tools/dist/check-binaries.sh ARCH GLIBC WHEEL TARBALL   (ARCH: x86_64 or aarch64)
set -euo pipefail
arch=$1 glibc=$2 wheel=$(realpath "$3") tarball=$(realpath "$4")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-binaries: $*" >&2; exit 1; }
case $arch in
    x86_64) file_arch="x86-64" machine="Advanced Micro Devices X86-64" ;;
    aarch64) file_arch="ARM aarch64" machine="AArch64" ;;
    *) fail "unknown architecture $arch" ;;
esac
tag=manylinux_${glibc/./_}_$arch

# A shared object: the right machine, and no versioned glibc symbol above GLIBC.
check_so() {
    local so=$1
    file -L "$so" | grep -q "ELF 64-bit LSB shared object, $file_arch" || fail "$(file -L "$so")"
    local newest
    newest=$(readelf --dyn-syms -W "$so" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -n 1)
    [ -n "$newest" ] || fail "$so references no glibc symbol version"
    [ "$(printf '%s\n%s\n' "$newest" "$glibc" | sort -V | tail -n 1)" = "$glibc" ] \
        || fail "$(basename "$so") needs GLIBC_$newest, newer than $glibc"
    echo "check-binaries: $(basename "$so"): $file_arch, newest glibc symbol GLIBC_$newest"
}

case $(basename "$wheel") in *"-cp39-abi3-"*"$tag"*) ;; *) fail "$(basename "$wheel") is not a cp39-abi3 $tag wheel" ;; esac
mkdir "$work/wheel"
(cd "$work/wheel" && python -m zipfile -e "$wheel" .)
mapfile -t sos < <(find "$work/wheel" -name '*.so*' -type f)
[ "${#sos[@]}" -eq 1 ] || fail "the wheel should hold one shared object: ${sos[*]}"
check_so "${sos[0]}"
[ -z "$(find "$work/wheel" -path '*.libs*' -print -quit)" ] || fail "the wheel vendors libraries"
show=$(auditwheel show "$wheel")
grep -q "consistent with the following platform tag:" <<<"$show" || fail "auditwheel show: $show"
grep -q "\"$tag\"" <<<"$show" || fail "auditwheel show does not say $tag: $show"
if grep -q "external shared libraries are required" <<<"$show"; then fail "auditwheel: $show"; fi
echo "check-binaries: auditwheel show: $(basename "$wheel") is consistent with $tag"

tar xzf "$tarball" -C "$work"
lib=$(find "$work" -path '*/lib/libimds_cache.so.0' -type f)
[ -n "$lib" ] || fail "$(basename "$tarball") has no lib/libimds_cache.so.0"
check_so "$lib"
readelf -d "$lib" | grep -q 'SONAME.*\[libimds_cache.so.0\]' || fail "no SONAME libimds_cache.so.0"
machines=$(readelf -h "$(dirname "$lib")/libimds_cache.a" | sed -n 's/^ *Machine: *//p' | sort -u)
[ "$machines" = "$machine" ] || fail "libimds_cache.a holds objects for: $machines"
echo "check-binaries: $(basename "$tarball"): libimds_cache.a and .so.0 are $machine"
