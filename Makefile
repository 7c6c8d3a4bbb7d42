# The two commands of the README, `make demo` and `make test`, install what they need.
# `make` alone lists every target (`make help`); each target's line is the `## ` comment above
# its rule, here or in mk/*.mk, and `make help-check` (part of `make test`) fails when a .PHONY
# target has none.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
CARGO ?= cargo
BARE_METAL := thumbv7em-none-eabihf
VENV := .venv
PY := $(CURDIR)/$(VENV)/bin/python

.PHONY: help help-check test test-steps demo demo-progress setup venv fmt-check clippy unit bare-metal doc \
	benches-compile torture

# The C ABI, Python, fuzzing, Miri and benchmark targets.
-include mk/*.mk

## This list: every target, one line each.
help:
	@awk -f mk/help.awk $(MAKEFILE_LIST)

## Fails when a .PHONY target has no `## ` line above its rule.
help-check:
	@awk -v check=1 -f mk/help.awk $(MAKEFILE_LIST)

# The steps run in a session of their own; tests/lib/no_leftovers.sh lists and stops whatever
# is still running when they end (an emulator a script forgot, say) and then fails.
## Everything CI checks, then fails if any process it started is still running.
test:
	tests/lib/no_leftovers.sh $(MAKE) --no-print-directory test-steps

TEST_STEPS := setup help-check fmt-check clippy unit bare-metal doc benches-compile miri \
	fuzz-check loom c-test c-test-rust-asan py-test host-torture dist-check

# Each step is timed, and the times are printed at the end (CI's budget is 40 minutes).
## The steps of `make test` (fmt, clippy, tests, Miri, fuzz corpora, C, Python), unguarded.
test-steps:
	@times=; for step in $(TEST_STEPS); do \
		start=$$(date +%s); \
		$(MAKE) --no-print-directory $$step || { \
			echo "make test: step times:$$times"; echo "make test: $$step failed"; exit 1; }; \
		times="$$times $$step $$(( $$(date +%s) - start ))s"; \
	done; echo "make test: step times:$$times"
	@echo "make test: all checks passed"

# Each agent against a fresh emulator with 1000 identities (REAL_LIMITS=1: IMDS's own limits).
DEMO_AGENTS := rust c python
## The main job: the Rust, C and Python agents against a bundled IMDS emulator; then the host phase.
demo: setup demo-progress c-agent py-install
	@echo "== building the emulator and the Rust agent (release)"
	$(CARGO) build --release --locked -p imds-emulator
	$(CARGO) build --release --locked -p imds-cache-client --example rust_agent
	bash tests/demo.sh $(DEMO_AGENTS)
	@$(MAKE) --no-print-directory host-demo

## What `make demo` is about to build (the wheel takes a minute or two on a fresh machine).
demo-progress:
	@echo "== make demo: building the C agent, the Python wheel (maturin, release) and the Rust agent"

# `make bench` runs the benches; CI only builds them.
## Builds the benches without running them.
benches-compile:
	$(CARGO) bench --no-run --locked -p imds-cache-benches --features azure

## Toolchain pieces a fresh machine lacks (rustfmt, clippy, the bare-metal target); fails loudly.
setup:
	@command -v rustup >/dev/null || { echo "rustup is required"; exit 1; }
	rustup component add rustfmt clippy
	rustup target add $(BARE_METAL)

## cargo fmt --check over the workspace.
fmt-check:
	$(CARGO) fmt --all -- --check

## cargo clippy on every target of the workspace, warnings as errors.
clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy -p imds-cache-client -p imds-cache-benches --all-targets --locked \
		$(AZURE_FEATURES) -- -D warnings

# The emulator's tests check it against the real SDK, so azure-identity is never skipped here.
## A .venv with azure-identity.
venv:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check azure-identity

# The torture test runs here in its short form (TORTURE_SECS unset: 30 s); `make torture` is
# the long one.
# The azure_core credential is a feature (Rust >= 1.88, above the workspace's 1.80): its own
# tests, its doc examples and the end-to-end test against Azurite run with it on.
AZURE_FEATURES := --features imds-cache-client/azure_core,imds-cache-benches/azure
## cargo test over the workspace (torture's short form), then the azure_core credential's tests.
unit: venv $(AZURITE)
	IMDS_EMULATOR_PYTHON=$(PY) IMDS_EMULATOR_REQUIRE_AZURE_IDENTITY=1 $(CARGO) test --workspace --locked
	$(CARGO) test --locked -p imds-cache-client --features azure_core --lib --test azure_e2e
	$(CARGO) test --locked -p imds-cache-client --features azure_core --doc

## The core links neither std nor alloc: builds it for a bare-metal target.
bare-metal:
	$(CARGO) build -p imds-cache --target $(BARE_METAL) --locked
	$(CARGO) build -p imds-cache --target $(BARE_METAL) --release --locked

## cargo doc over the workspace, warnings as errors.
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked \
		--features imds-cache-client/azure_core

# 16 threads against an emulator that injects random faults (RELIABILITY.md), release build.
TORTURE_SECS ?= 600
## The torture test's long form: TORTURE_SECS seconds (default 600), release build.
torture:
	TORTURE_SECS=$(TORTURE_SECS) $(CARGO) test --release --locked -p imds-cache-client \
		--test torture -- --nocapture
