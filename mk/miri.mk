# Miri: the core's concurrent, storage and model tests, and the client's and the ffi crate's
# tests that do no I/O (the sans-IO C ABI driven from Rust), under the nightly interpreter.
# Included by the root Makefile; part of `make test`. Heavy tests shrink under `cfg(miri)` or
# are ignored there with a reason.
#
# The core forbids unsafe code, so Miri can find no undefined behaviour in its single-threaded
# tests (they run natively in `make unit`); what it checks there is the seqlock's atomics under
# its data race detector, with readers racing the writer, and the eviction model. Its table is
# atomic words, each a tracked location, which made the whole suite take over 15 minutes.
#
# The core's test helpers leak their buffers on purpose (`Box::leak`, for `'static` caches);
# the core itself cannot leak (it neither allocates nor links `alloc`), so its run ignores
# leaks. The ffi run checks them.
.PHONY: miri miri-setup loom

## The nightly toolchain with Miri and the standard library's source; fails if they cannot be had.
miri-setup:
	rustup toolchain list | grep '^nightly' >/dev/null || rustup toolchain install nightly --profile minimal
	rustup component add --toolchain nightly miri rust-src
	$(CARGO) +nightly miri setup

## The core's concurrent and model tests, the client's and the C ABI's without I/O, under Miri.
miri: miri-setup
	MIRIFLAGS="-Zmiri-ignore-leaks" $(CARGO) +nightly miri test --locked -p imds-cache --lib \
		-- cache::concurrent_tests cache::handover_tests storage::
	MIRIFLAGS="-Zmiri-ignore-leaks" $(CARGO) +nightly miri test --locked -p imds-cache --test model
	$(CARGO) +nightly miri test --locked -p imds-cache-client -p imds-cache-ffi --lib

# Its own target dir: `--cfg loom` would otherwise rebuild everything else. LOOM_MAX_PREEMPTIONS=2
# explores more interleavings (about 6 minutes here against 25 s).
## The loom models of the table's seqlock: no torn key or token, a writer may die at any store.
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --locked --release -p imds-cache --lib loom
