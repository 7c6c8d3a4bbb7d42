#!/usr/bin/env bash
# Checks the x86_64 C release tarball as a user would use it: extracted into an empty temporary
# folder with no repository around it, a C program built with the README's own two commands
# (shared through imds_cache.pc, static through imds_cache-static.pc), both run against a
# fresh emulator. The program also checks that the header and the library carry VERSION.
#
# Usage: tools/dist/check-tarball.sh TARBALL VERSION EMULATOR
set -euo pipefail
tarball=$(realpath "$1") version=$2 emulator=$(realpath "$3")
smoke=$(realpath "$(dirname "$0")/../../tests/c/smoke.c")
name=imds-cache-$version
work=$(mktemp -d)
emu_pid=
cleanup() {
    if [ -n "$emu_pid" ]; then kill "$emu_pid" 2>/dev/null || true; wait "$emu_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "check-tarball: $*" >&2; exit 1; }

cp "$smoke" "$work/app.c"
cd "$work"
tar xzf "$tarball"
root=$work/$name
[ -d "$root" ] || fail "no top folder $name/"
for f in README include/imds_cache.h lib/libimds_cache.a lib/libimds_cache.so.0 \
    lib/pkgconfig/imds_cache.pc lib/pkgconfig/imds_cache-static.pc; do
    [ -f "$root/$f" ] || fail "missing $name/$f"
done
[ "$(readlink "$root/lib/libimds_cache.so")" = libimds_cache.so.0 ] || fail "lib/libimds_cache.so is not a link to libimds_cache.so.0"
readelf -d "$root/lib/libimds_cache.so.0" | grep -q 'SONAME.*\[libimds_cache.so.0\]' || fail "no SONAME libimds_cache.so.0"
grep -q '^prefix=${pcfiledir}/../..$' "$root/lib/pkgconfig/imds_cache.pc" || fail "the .pc prefix is not relocatable"

# The README's lines, with its placeholders filled in: `export PKG_CONFIG_PATH=…` once, then
# each `cc app.c …` (shared first, then static).
export_line=$(grep -m1 '^  export PKG_CONFIG_PATH=' "$root/README" | sed -e 's/^  //' -e "s|/path/to|$work|")
mapfile -t cc_lines < <(grep '^  cc app.c' "$root/README" | sed 's/^  //')
[ "${#cc_lines[@]}" -eq 2 ] || fail "the README should give two cc lines (shared, static)"
eval "$export_line"
[ "$(pkg-config --modversion imds_cache)" = "$version" ] || fail "imds_cache.pc says $(pkg-config --modversion imds_cache)"
[ "$(pkg-config --modversion imds_cache-static)" = "$version" ] || fail "imds_cache-static.pc has the wrong version"
strict="-std=c99 -Wall -Wextra -Wpedantic -Werror"
eval "${cc_lines[0]/cc app.c/cc $strict app.c}"
mv app app_shared
eval "${cc_lines[1]/cc app.c/cc $strict app.c}"
mv app app_static
readelf -d app_shared | grep -q 'NEEDED.*\[libimds_cache.so.0\]' || fail "app_shared does not need libimds_cache.so.0"
if readelf -d app_static | grep -q 'NEEDED.*libimds_cache'; then fail "app_static needs libimds_cache"; fi

"$emulator" --port 0 >emulator.out 2>emulator.err &
emu_pid=$!
for _ in $(seq 200); do [ -s emulator.out ] && break; sleep 0.05; done
url=$(head -n 1 emulator.out)
case $url in http://127.0.0.1:*) ;; *) fail "the emulator did not start: $(cat emulator.err)" ;; esac
# From another folder, so only the rpath (shared) or nothing (static) finds the library.
mkdir elsewhere
(cd elsewhere && ../app_shared "$url" "version=$version")
(cd elsewhere && ../app_static "$url" "version=$version")
echo "check-tarball: $(basename "$tarball"): shared and static builds from the README ran"
