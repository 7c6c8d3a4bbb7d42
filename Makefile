# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
BARE_METAL := thumbv7em-none-eabihf
VENV := .venv
PY := $(CURDIR)/$(VENV)/bin/python

.PHONY: test demo setup venv fmt-check clippy unit bare-metal doc benches-compile

# Parts owned by later issues (C ABI, Python) add their targets here.
-include mk/*.mk

## Everything CI checks: formatting, lints, tests, the no_std build, docs.
test: setup fmt-check clippy unit bare-metal doc benches-compile miri fuzz-check c-test c-test-rust-asan py-test
	@echo "make test: all checks passed"

## CI builds the benches without running them (`make bench` runs them).
benches-compile:
	$(CARGO) bench --no-run --locked -p imds-cache-benches

## Toolchain pieces a fresh machine lacks; fail loudly if they cannot be had.
setup:
	@command -v rustup >/dev/null || { echo "rustup is required"; exit 1; }
	rustup component add rustfmt clippy
	rustup target add $(BARE_METAL)

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## azure-identity, so the emulator's tests check it against the real SDK (never skipped here).
venv:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check azure-identity

unit: venv
	IMDS_EMULATOR_PYTHON=$(PY) IMDS_EMULATOR_REQUIRE_AZURE_IDENTITY=1 $(CARGO) test --workspace --locked

## The core links neither std nor alloc: prove it on a bare-metal target.
bare-metal:
	$(CARGO) build -p imds-cache --target $(BARE_METAL) --locked
	$(CARGO) build -p imds-cache --target $(BARE_METAL) --release --locked

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked

## The main job: each agent against a fresh bundled IMDS emulator (REAL_LIMITS=1: IMDS's own).
DEMO_AGENTS := rust c python
demo: setup c-agent py-install
	$(CARGO) build --release --locked -p imds-emulator
	$(CARGO) build --release --locked -p imds-cache-ffi --example rust_agent
	bash tests/demo.sh $(DEMO_AGENTS)
