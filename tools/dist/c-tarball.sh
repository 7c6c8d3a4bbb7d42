#!/usr/bin/env bash
# Builds the C library for one Linux target with cargo-zigbuild (zig links against the glibc
# symbol versions of GLIBC, whatever the build machine has) and packs the release tarball
# OUT/imds-cache-VERSION-ARCH-linux-gnu.tar.gz: imds-cache-VERSION/{README,include,lib}.
#
# Usage: tools/dist/c-tarball.sh RUST_TARGET GLIBC VERSION LIBS_PRIVATE OUT
# (run from the repository root with .venv/bin on PATH: cargo-zigbuild and `python -m ziglang`)
set -euo pipefail
target=$1 glibc=$2 version=$3 libs_private=$4 out=$5
arch=${target%%-*}
name=imds-cache-$version
tarball=$out/$name-$arch-linux-gnu.tar.gz
build=target/$target/release

cargo zigbuild --release --locked -p imds-cache-ffi --target "$target.$glibc"
for f in libimds_cache_ffi.a libimds_cache_ffi.so; do
    [ -f "$build/$f" ] || { echo "c-tarball: $build/$f was not built"; exit 1; }
done
# make install and the C programs linked against it rely on this SONAME (ffi/build.rs sets it).
readelf -d "$build/libimds_cache_ffi.so" | grep -q 'SONAME.*\[libimds_cache.so.0\]' || {
    echo "c-tarball: $build/libimds_cache_ffi.so has no SONAME libimds_cache.so.0"
    exit 1
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/$name
install -d "$root/include" "$root/lib/pkgconfig"
install -m 644 include/imds_cache.h "$root/include/"
install -m 644 "$build/libimds_cache_ffi.a" "$root/lib/libimds_cache.a"
install -m 755 "$build/libimds_cache_ffi.so" "$root/lib/libimds_cache.so.0"
ln -s libimds_cache.so.0 "$root/lib/libimds_cache.so"
# The same template as `make install`, with a prefix relative to the .pc file itself.
# shellcheck disable=SC2016 # ${pcfiledir} is for pkg-config, not for the shell.
sed -e 's|@PREFIX@|${pcfiledir}/../..|' -e "s|@VERSION@|$version|" \
    -e "s|@LIBS_PRIVATE@|$libs_private|" ffi/imds_cache.pc.in >"$root/lib/pkgconfig/imds_cache.pc"
grep -q '^Libs: -L${libdir} -limds_cache$' "$root/lib/pkgconfig/imds_cache.pc" || {
    echo "c-tarball: ffi/imds_cache.pc.in changed its Libs line; update imds_cache-static.pc here"
    exit 1
}
# Static linking by name: -limds_cache would pick the .so that sits beside the .a.
sed -e 's|^Name: imds_cache$|Name: imds_cache-static|' \
    -e "s|^Libs: .*|Libs: \${libdir}/libimds_cache.a $libs_private|" -e '/^Libs.private:/d' \
    "$root/lib/pkgconfig/imds_cache.pc" >"$root/lib/pkgconfig/imds_cache-static.pc"
sed -e "s|@VERSION@|$version|g" -e "s|@TRIPLE@|$arch-linux-gnu|" -e "s|@GLIBC@|$glibc|" \
    tools/dist/tarball-README.in >"$root/README"

# Reproducible: fixed owner, order and times (those of the last commit, or 0 out of git).
mtime=$(git log -1 --format=%ct 2>/dev/null || echo 0)
mkdir -p "$out"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" -C "$stage" -cf - "$name" |
    gzip -9n >"$tarball"
echo "c-tarball: $tarball"
