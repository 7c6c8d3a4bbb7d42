# The C ABI: the installable library, the C tests under sanitizers and valgrind, the
# pkg-config builds, and the C agent demo. Included by the root Makefile.
#
#   make c-test                  C tests (C99 and C++11, ASan+UBSan, valgrind), install + pkg-config
#   make c-test-rust-asan        the C tests against a staticlib whose Rust is built with ASan too
#   make install PREFIX=/opt/x   libimds_cache.{a,so.0,so}, imds_cache.h, imds_cache.pc
#   make demo-c                  the C agent against a fresh emulator with 1000 identities
#   make header                  regenerate include/imds_cache.h (ffi's tests::header checks it)

.PHONY: c-test c-test-rust-asan install demo-c c-agent header capi-lib capi-tools

PREFIX ?= /usr/local
# SHARED=no installs the static library only (what a fully static consumer wants).
SHARED ?= yes
CAPI_CC ?= gcc
CAPI_CXX ?= g++
CAPI_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
CAPI_RELEASE := target/release
CAPI_OUT := target/c
# What a static libimds_cache.a needs from the system (rustc --print native-static-libs).
CAPI_LIBS_PRIVATE := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
CAPI_WARN := -Wall -Wextra -Wpedantic -Werror
CAPI_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
CAPI_VALGRIND := valgrind --error-exitcode=1 --leak-check=full \
	--errors-for-leak-kinds=definite,indirect,possible \
	--show-leak-kinds=definite,indirect,possible

## Tools the C tests need; installed when missing (fails loudly if they cannot be had).
capi-tools:
	@missing=""; \
	command -v pkg-config >/dev/null || missing="$$missing pkgconf"; \
	command -v valgrind >/dev/null || missing="$$missing valgrind"; \
	command -v $(CAPI_CC) >/dev/null || missing="$$missing gcc"; \
	command -v $(CAPI_CXX) >/dev/null || missing="$$missing g++"; \
	command -v python3 >/dev/null || missing="$$missing python3"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } \
			|| { echo "c-test: cannot install$$missing (run as root with apt-get, or install them)"; exit 1; }; \
	fi

## The library (static and shared) and the emulator, release builds.
capi-lib:
	$(CARGO) build --release --locked -p imds-cache-ffi -p imds-emulator

## Regenerates include/imds_cache.h (ffi's header test fails when it is stale).
header:
	IMDS_CACHE_BLESS=1 $(CARGO) test --locked -p imds-cache-ffi --lib tests::header

## Installs libimds_cache.{a,so.0,so}, imds_cache.h, imds_cache.pc in PREFIX (SHARED=no: static only).
install: capi-lib
	@test -n "$(CAPI_VERSION)" || { echo "install: no version in Cargo.toml"; exit 1; }
	install -d "$(DESTDIR)$(PREFIX)/lib/pkgconfig" "$(DESTDIR)$(PREFIX)/include"
	install -m 644 $(CAPI_RELEASE)/libimds_cache_ffi.a "$(DESTDIR)$(PREFIX)/lib/libimds_cache.a"
	if [ "$(SHARED)" = yes ]; then \
		install -m 755 $(CAPI_RELEASE)/libimds_cache_ffi.so "$(DESTDIR)$(PREFIX)/lib/libimds_cache.so.0"; \
		ln -sf libimds_cache.so.0 "$(DESTDIR)$(PREFIX)/lib/libimds_cache.so"; \
	fi
	install -m 644 include/imds_cache.h "$(DESTDIR)$(PREFIX)/include/imds_cache.h"
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(CAPI_VERSION)|' \
		-e 's|@LIBS_PRIVATE@|$(CAPI_LIBS_PRIVATE)|' ffi/imds_cache.pc.in \
		> "$(DESTDIR)$(PREFIX)/lib/pkgconfig/imds_cache.pc"
	@echo "installed imds_cache $(CAPI_VERSION) in $(DESTDIR)$(PREFIX)"

CAPI_STATIC := $(CAPI_RELEASE)/libimds_cache_ffi.a $(CAPI_LIBS_PRIVATE)

## The C tests: C99 and C++11 under ASan+UBSan, valgrind, the installed library through pkg-config.
c-test: capi-tools capi-lib
	@mkdir -p $(CAPI_OUT)
	@echo "== building the C tests (C99 and C++11, -Werror, ASan+UBSan; plain for valgrind)"
	$(CAPI_CC) -std=c99 -D_POSIX_C_SOURCE=200809L $(CAPI_WARN) -g $(CAPI_SAN) -Iinclude \
		tests/c/test_capi.c $(CAPI_STATIC) -o $(CAPI_OUT)/test_capi_c99_asan
	$(CAPI_CXX) -x c++ -std=c++11 -D_POSIX_C_SOURCE=200809L $(CAPI_WARN) -g $(CAPI_SAN) -Iinclude \
		tests/c/test_capi.c -x none $(CAPI_STATIC) -o $(CAPI_OUT)/test_capi_cxx11_asan
	$(CAPI_CC) -std=c99 -D_POSIX_C_SOURCE=200809L $(CAPI_WARN) -g -O1 -Iinclude \
		tests/c/test_capi.c $(CAPI_STATIC) -o $(CAPI_OUT)/test_capi_plain
	$(CAPI_CC) -std=c99 -D_POSIX_C_SOURCE=200809L $(CAPI_WARN) -g -O2 -pthread -Iinclude \
		ffi/examples/agent.c $(CAPI_STATIC) -o $(CAPI_OUT)/agent
	$(CAPI_CXX) -x c++ -std=c++11 -D_POSIX_C_SOURCE=200809L $(CAPI_WARN) -fsyntax-only -Iinclude \
		ffi/examples/agent.c
	@echo "== installing to a temporary prefix; pkg-config builds (dynamic, then static-only)"
	rm -rf $(CAPI_OUT)/prefix $(CAPI_OUT)/prefix-static
	$(MAKE) --no-print-directory install PREFIX=$(CURDIR)/$(CAPI_OUT)/prefix
	$(MAKE) --no-print-directory install PREFIX=$(CURDIR)/$(CAPI_OUT)/prefix-static SHARED=no
	readelf -d $(CAPI_OUT)/prefix/lib/libimds_cache.so.0 > $(CAPI_OUT)/so.dynamic
	grep -q 'SONAME.*\[libimds_cache.so.0\]' $(CAPI_OUT)/so.dynamic
	PKG_CONFIG_PATH=$(CURDIR)/$(CAPI_OUT)/prefix/lib/pkgconfig; export PKG_CONFIG_PATH; \
		$(CAPI_CC) -std=c99 $(CAPI_WARN) tests/c/smoke.c $$(pkg-config --cflags --libs imds_cache) \
		-o $(CAPI_OUT)/smoke_dynamic
	PKG_CONFIG_PATH=$(CURDIR)/$(CAPI_OUT)/prefix-static/lib/pkgconfig; export PKG_CONFIG_PATH; \
		$(CAPI_CC) -std=c99 $(CAPI_WARN) tests/c/smoke.c $$(pkg-config --static --cflags --libs imds_cache) \
		-o $(CAPI_OUT)/smoke_static
	readelf -d $(CAPI_OUT)/smoke_dynamic > $(CAPI_OUT)/smoke_dynamic.dynamic
	readelf -d $(CAPI_OUT)/smoke_static > $(CAPI_OUT)/smoke_static.dynamic
	grep -q 'NEEDED.*\[libimds_cache.so.0\]' $(CAPI_OUT)/smoke_dynamic.dynamic
	! grep -q 'NEEDED.*libimds_cache' $(CAPI_OUT)/smoke_static.dynamic
	@echo "== running against the emulators"
	tests/c/run.sh $(CAPI_OUT)/test_capi_c99_asan $(CAPI_OUT)/test_capi_cxx11_asan \
		"env IMDS_CACHE_TEST_NO_FORK=1 IMDS_CACHE_TEST_NO_RACE=1 $(CAPI_VALGRIND) $(CAPI_OUT)/test_capi_plain" \
		"env LD_LIBRARY_PATH=$(CURDIR)/$(CAPI_OUT)/prefix/lib $(CAPI_OUT)/smoke_dynamic" \
		$(CAPI_OUT)/smoke_static
	@echo "c-test: all C tests passed"

## The C tests against a staticlib whose Rust code is instrumented too (nightly
## `-Zsanitizer=address`, its own target dir; `--target` keeps build scripts uninstrumented).
CAPI_ASAN_DIR := target/asan
CAPI_ASAN_LIB := $(CAPI_ASAN_DIR)/x86_64-unknown-linux-gnu/debug/libimds_cache_ffi.a
c-test-rust-asan: capi-tools capi-lib
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	RUSTFLAGS="-Zsanitizer=address" $(CARGO) +nightly build --locked -p imds-cache-ffi --lib \
		--target x86_64-unknown-linux-gnu --target-dir $(CAPI_ASAN_DIR)
	nm -A $(CAPI_ASAN_LIB) 2>/dev/null | grep 'imds_cache_ffi.*U __asan_report_load' >/dev/null \
		|| { echo "c-test-rust-asan: the Rust objects are not instrumented"; exit 1; }
	@mkdir -p $(CAPI_OUT)
	$(CAPI_CC) -std=c99 -D_POSIX_C_SOURCE=200809L $(CAPI_WARN) -g -fsanitize=address \
		-fno-omit-frame-pointer -Iinclude tests/c/test_capi.c $(CAPI_ASAN_LIB) $(CAPI_LIBS_PRIVATE) \
		-o $(CAPI_OUT)/test_capi_rust_asan
	tests/c/run.sh $(CAPI_OUT)/test_capi_rust_asan
	@echo "c-test-rust-asan: passed"

## The C agent, built for `make demo` (which runs it after the Rust agent).
c-agent: capi-lib
	@mkdir -p $(CAPI_OUT)
	$(CAPI_CC) -std=c99 -D_POSIX_C_SOURCE=200809L $(CAPI_WARN) -O2 -pthread -Iinclude \
		ffi/examples/agent.c $(CAPI_STATIC) -o $(CAPI_OUT)/agent

## The C agent alone against a fresh emulator (the same script and limits as `make demo`).
demo-c: c-agent
	bash tests/demo.sh c
