# Fuzzing: the cargo-fuzz targets of core/fuzz/ (see FUZZING.md).
FUZZ_DIR := core/fuzz
FUZZ_TARGETS := token_body response token_body_vs_serde_json cache_ops arm_identity request
FUZZ_SECS ?= 60
CARGO_FUZZ_VERSION := 0.13.2

.PHONY: fuzz-tools fuzz-check fuzz

## Nightly and cargo-fuzz (pinned), installed when missing; fails loudly without them.
fuzz-tools:
	@command -v rustup >/dev/null || { echo "fuzz: rustup is required" >&2; exit 1; }
	@rustup toolchain list | grep nightly >/dev/null || rustup toolchain install nightly --profile minimal \
		|| { echo "fuzz: cannot install the nightly toolchain" >&2; exit 1; }
	@cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked \
		|| { echo "fuzz: cannot install cargo-fuzz $(CARGO_FUZZ_VERSION)" >&2; exit 1; }
	@cargo +nightly fuzz --version

## Builds every fuzz target (nightly, ASan) and replays its corpus and regressions once.
fuzz-check: fuzz-tools
	cd $(FUZZ_DIR) && cargo +nightly fuzz build
	@cd $(FUZZ_DIR) && for t in $(FUZZ_TARGETS); do \
		dirs="corpus/$$t"; test -d "regressions/$$t" && dirs="$$dirs regressions/$$t"; \
		files=$$(find $$dirs -type f | wc -l); \
		test "$$files" -gt 0 || { echo "fuzz-check: $$t has no corpus" >&2; exit 1; }; \
		log=$$(mktemp); \
		cargo +nightly fuzz run $$t $$dirs -- -runs=0 >"$$log" 2>&1 \
			|| { cat "$$log" >&2; rm -f "$$log"; echo "fuzz-check: $$t FAILED" >&2; exit 1; }; \
		ran=$$(sed -n 's/^#\([0-9]*\)[[:space:]]*INITED.*/\1/p' "$$log"); rm -f "$$log"; \
		test "$${ran:-0}" -gt "$$files" \
			|| { echo "fuzz-check: $$t ran $${ran:-0} inputs for $$files files" >&2; exit 1; }; \
		echo "fuzz-check: $$t: $$files files replayed"; \
	done

## Fuzzes each target in turn for FUZZ_SECS seconds (default 60); grows the corpora.
fuzz: fuzz-tools
	@cd $(FUZZ_DIR) && for t in $(FUZZ_TARGETS); do \
		echo "fuzz: $$t for $(FUZZ_SECS) s"; \
		cargo +nightly fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECS) -print_final_stats=1 \
			|| { echo "fuzz: $$t FAILED (the crash is in $(FUZZ_DIR)/artifacts/$$t/)" >&2; exit 1; }; \
	done
	@echo "fuzz: done; minimise with 'cargo +nightly fuzz cmin <target> -- -use_counters=0' before committing"
