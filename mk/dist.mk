# Release artifacts and their checks. Included by the root Makefile (`-include mk/*.mk`); uses
# its CARGO, VENV and PY, and CAPI_LIBS_PRIVATE from mk/capi.mk.
#
#   make dist         dist/: the abi3 wheels (manylinux_2_17 x86_64, aarch64), the sdist, the C
#                     tarballs (x86_64, aarch64) and SHA256SUMS
#   make dist-check   each artifact used as a user would (part of `make test`)
#   make package      cargo package, with verification, of the crates to publish
#
# manylinux_2_17 (manylinux2014), not 2_28: it is the oldest glibc Rust's linux-gnu targets
# support, so it installs on every distribution with a CPython >= 3.9 that pip can serve
# (RHEL/CentOS 7 and Amazon Linux 2 included), and zig links against 2.17's symbol versions
# whatever glibc this machine has, with no container. Nothing here needs a newer symbol: the
# checks fail the day something does.
#
# One version: `version` in [workspace.package] of the root Cargo.toml. maturin takes the
# wheel's from Cargo, the tarball's name and the .pc files' take DIST_VERSION, and
# tools/dist/check_versions.py fails when anything disagrees.

.PHONY: dist dist-tools dist-check package

DIST := dist
DIST_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DIST_GLIBC := 2.17
DIST_ARCHES := x86_64 aarch64
# The tools (maturin, cargo-zigbuild, `python -m ziglang`, auditwheel) come from .venv.
DIST_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
DIST_MATURIN := $(DIST_ENV) maturin
# The interpreter .venv was made from: the checks make fresh venvs with it.
DIST_BASE_PY = $$($(PY) -c 'import sys; print(sys._base_executable)')
DIST_EMULATOR := target/release/imds-emulator
DIST_WHEEL_X86 = $(wildcard $(DIST)/imds_cache-*-cp39-abi3-*x86_64.whl)
DIST_SDIST := $(DIST)/imds_cache-$(DIST_VERSION).tar.gz
DIST_TARBALL = $(DIST)/imds-cache-$(DIST_VERSION)-$(1)-linux-gnu.tar.gz
# The published crates, in publishing order.
DIST_CRATES := imds-cache imds-cache-client

## The release tools into .venv (tools/dist/requirements.txt) and the two Rust targets.
dist-tools: venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r tools/dist/requirements.txt
	rustup target add $(foreach a,$(DIST_ARCHES),$(a)-unknown-linux-gnu)

## Every release artifact into dist/: wheels, sdist, C tarballs (x86_64, aarch64), SHA256SUMS.
dist: dist-tools
	@test -n "$(DIST_VERSION)" || { echo "dist: no version in Cargo.toml"; exit 1; }
	rm -rf $(DIST)
	mkdir -p $(DIST)
	for arch in $(DIST_ARCHES); do \
		$(DIST_MATURIN) build -m python/Cargo.toml --release --locked --zig \
			--target $$arch-unknown-linux-gnu --compatibility manylinux_$(subst .,_,$(DIST_GLIBC)) \
			--out $(DIST); \
	done
	$(DIST_MATURIN) sdist -m python/Cargo.toml --out $(DIST)
	$(PY) tools/dist/sdist_lock.py $(DIST_SDIST)
	for arch in $(DIST_ARCHES); do \
		$(DIST_ENV) tools/dist/c-tarball.sh $$arch-unknown-linux-gnu $(DIST_GLIBC) \
			$(DIST_VERSION) "$(CAPI_LIBS_PRIVATE)" $(DIST); \
	done
	cd $(DIST) && sha256sum -- *.whl *.tar.gz > SHA256SUMS
	@ls -l $(DIST)

# The crates are published in order: imds-cache, then imds-cache-client, which depends on it.
# Packaged together, cargo verifies the second against the first through a temporary local
# registry, so both are built from their .crate files as crates.io would see them.
# --allow-dirty: this checks the packages; `cargo publish` itself wants a clean tree.
# cargo unpacks the first crate from its temporary registry into CARGO_HOME/registry/src and
# does not unpack it again while a copy of the same name and version is there: an earlier
# `make package` would verify the second crate against the first one's old sources. Only
# these crates' own unpacked copies are removed.
## cargo package with verification of the published crates (imds-cache, imds-cache-client).
package:
	rm -rf $(foreach c,$(DIST_CRATES),$${CARGO_HOME:-$$HOME/.cargo}/registry/src/*/$(c)-$(DIST_VERSION))
	$(CARGO) package --locked --allow-dirty $(addprefix -p ,$(DIST_CRATES))
	tools/dist/check-crates.sh $(DIST_VERSION) $(DIST_CRATES)

## Each artifact as a user would have it: wheel without Rust, sdist, C tarball, aarch64, versions.
dist-check: dist package
	$(CARGO) build --release --locked -p imds-emulator
	for arch in $(DIST_ARCHES); do \
		$(DIST_ENV) tools/dist/check-binaries.sh $$arch $(DIST_GLIBC) \
			$(DIST)/imds_cache-*-cp39-abi3-*$$arch.whl $(call DIST_TARBALL,$$arch); \
	done
	tools/dist/check-wheel.sh $(DIST_WHEEL_X86) $(DIST_VERSION) "$(DIST_BASE_PY)" $(DIST_EMULATOR)
	CARGO_TARGET_DIR=$(CURDIR)/target/dist-sdist \
		tools/dist/check-sdist.sh $(DIST_SDIST) $(DIST_VERSION) "$(DIST_BASE_PY)"
	tools/dist/check-tarball.sh $(call DIST_TARBALL,x86_64) $(DIST_VERSION) $(DIST_EMULATOR)
	$(DIST_ENV) python tools/dist/check_versions.py $(DIST)
	@# The check can fail: each artifact's drift alone, and the sources' against another version.
	$(DIST_ENV) python tools/dist/check_versions.py $(DIST) --self-test
	if out=$$($(DIST_ENV) python tools/dist/check_versions.py $(DIST) --expect 99.0.0 2>&1); then \
		echo "dist-check: check_versions.py passed against version 99.0.0"; exit 1; \
	fi; \
	grep -q 'include/imds_cache.h' <<<"$$out" && grep -q 'crate imds-cache has version' <<<"$$out"
	@echo "dist-check: all release artifacts checked"
