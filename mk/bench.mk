# `make bench`: every benchmark of BENCHMARKS.md in one run (~7 minutes on 2 cores), then the
# table that states each performance goal as a ratio. Absolute times depend on the machine;
# the ratios are measured in the same run.
#   BENCH_TIME=S      criterion measurement time per benchmark (default 2 s; warm-up 0.5 s)
#   REAL_LIMITS=1     also the cold start at IMDS's real limits (adds ~2.5 minutes)
# The C ABI hit (benches/c_abi_hit.sh: gcc, the static library) and the Python comparison
# (benches/python_vs_azure_identity.py, with the wheel and azure-identity that `make py-install`
# puts in .venv; skipped without .venv) are part of the run (see BENCHMARKS.md).
.PHONY: bench bench-build bench-scaling

BENCH_TIME ?= 2
BENCH_PKG := -p imds-cache-benches
# The comparison with azure_identity (azure_core 1.x: Rust >= 1.88) is part of the run.
BENCH_FEATURES := --features azure
BENCH_COLD_FLAGS := $(if $(filter 1,$(REAL_LIMITS)),--real-limits,)

# The criterion benches, the bins, the emulator binary and the C library
# (target/release/libimds_cache_ffi.a, as `make capi-lib`).
## Builds what `make bench` runs.
bench-build:
	$(CARGO) bench --no-run --locked $(BENCH_PKG) $(BENCH_FEATURES)
	$(CARGO) build --release --locked -p imds-emulator $(BENCH_PKG) $(BENCH_FEATURES) --bins
	$(CARGO) build --release --locked -p imds-cache-ffi

## Every benchmark of BENCHMARKS.md, then the table of goals (BENCH_TIME=S, REAL_LIMITS=1).
bench: bench-build
	@echo "machine: $$(nproc) cores, $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $$(date -u +'%Y-%m-%d %H:%M UTC')"
	$(CARGO) bench --locked $(BENCH_PKG) $(BENCH_FEATURES) --benches -- --warm-up-time 0.5 --measurement-time $(BENCH_TIME)
	IMDS_BENCH_WRITE=1 $(CARGO) test --release --locked $(BENCH_PKG) --test zero_alloc -- --nocapture
	./target/release/memory
	./target/release/cold_start $(BENCH_COLD_FLAGS)
	./target/release/hit_scaling
	./target/release/vs_azure_identity
	bash benches/c_abi_hit.sh
	@if [ -x $(PY) ]; then $(PY) benches/python_vs_azure_identity.py; \
	else echo "python comparison skipped: no $(PY) (make py-install)"; fi
	@echo; ./target/release/bench_table
	@echo; echo "HTML reports: target/criterion/report/index.html"

# Rounds of 1 thread then 2 threads, back to back; the last line is the ratio of calls/s.
## The client hit's scaling from 1 to 2 threads, same key and different keys (a minute).
bench-scaling:
	$(CARGO) build --release --locked $(BENCH_PKG) --bin hit_scaling
	./target/release/hit_scaling
