# Host sharing (Share::Host, IMDS_CACHE_SHARE=host) across processes: Rust, C and Python
# workers (client/examples/host_worker.rs, ffi/examples/host_worker.c,
# python/examples/host_worker.py) against one bundled emulator at IMDS's real limits, driven
# by tests/host/run.py. Included by the root Makefile (`include mk/host.mk`); uses its CARGO
# and PY, mk/capi.mk's C flags and mk/python.mk's py-install.
#
#   make host-demo             8 processes warm 20 identities x 3 resources: private, shared, azure-identity
#   make host-torture          6 workers x 30 s, kills and stops, transient faults (part of `make test`)
#   make host-torture-long     16 workers x 600 s

.PHONY: c-host-worker host-workers host-demo host-torture host-torture-long

HOST_RUN := python3 tests/host/run.py
HOST_TORTURE_PROCESSES ?= 6
HOST_TORTURE_SECS ?= 30
# Unset: a seed from the clock (the summary prints it, so a failure can be replayed).
HOST_TORTURE_SEED ?=

## The C worker of the host-sharing tests (target/c/host_worker).
c-host-worker: capi-lib
	@mkdir -p $(CAPI_OUT)
	$(CAPI_CC) -std=c99 -D_POSIX_C_SOURCE=200809L $(CAPI_WARN) -O2 -pthread -Iinclude \
		ffi/examples/host_worker.c $(CAPI_STATIC) -o $(CAPI_OUT)/host_worker

## The emulator, the Rust and C workers and the wheel for the host-sharing runs.
host-workers: c-host-worker py-install
	$(CARGO) build --release --locked -p imds-emulator
	$(CARGO) build --release --locked -p imds-cache-client --example host_worker

## 8 processes (Rust, Python, C) warm 60 keys: own caches, one host cache, azure-identity.
host-demo: host-workers
	$(HOST_RUN) demo

## Host sharing under kills, stops and faults: HOST_TORTURE_PROCESSES workers x HOST_TORTURE_SECS.
host-torture: host-workers
	$(HOST_RUN) torture --processes $(HOST_TORTURE_PROCESSES) --seconds $(HOST_TORTURE_SECS) \
		$(if $(HOST_TORTURE_SEED),--seed $(HOST_TORTURE_SEED))

## host-torture's long form: 16 workers x 600 s.
host-torture-long: host-workers
	$(HOST_RUN) torture --processes 16 --seconds 600 \
		$(if $(HOST_TORTURE_SEED),--seed $(HOST_TORTURE_SEED))
