#!/usr/bin/env bash
# Checks the .crate files `cargo package` left in target/package: named for VERSION, a README,
# the metadata crates.io shows (description, license, readme), no placeholder address, and
# none of the repository's fuzzing material or test fixtures.
#
# Usage: tools/dist/check-crates.sh VERSION CRATE...
set -euo pipefail
version=$1
shift
fail() { echo "check-crates: $*" >&2; exit 1; }
for crate in "$@"; do
    file=target/package/$crate-$version.crate
    [ -f "$file" ] || fail "no $file (run cargo package)"
    listing=$(tar tzf "$file" | sed "s|^$crate-$version/||")
    grep -qx README.md <<<"$listing" || fail "$crate has no README.md"
    if grep -E '(^|/)(fuzz|corpus|regressions|target)/' <<<"$listing"; then fail "$crate holds the files above"; fi
    if grep -E '^tests/' <<<"$listing" | grep -v '^tests/support/'; then fail "$crate holds the test files above"; fi
    manifest=$(tar xzf "$file" -O "$crate-$version/Cargo.toml")
    for key in description license readme; do
        grep -q "^$key = " <<<"$manifest" || fail "$crate: no $key in its Cargo.toml"
    done
    if grep -q 'example\.invalid' <<<"$manifest"; then fail "$crate: a placeholder address in its Cargo.toml"; fi
    echo "check-crates: $file: $(wc -l <<<"$listing") files, $(du -k "$file" | cut -f1) KiB"
done
