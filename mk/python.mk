# The Python wheel (python/): build, install into .venv, test; the Python demo agent.
# Included by the root Makefile (`-include mk/*.mk`); uses its CARGO, VENV and PY.
PIP := $(PY) -m pip --disable-pip-version-check
PY_TEST_DEPS := maturin pytest pytest-asyncio azure-core aiohttp azure-storage-blob mypy cryptography
AZURITE := python/tests/node_modules/.bin/azurite-blob

.PHONY: py-install py-test demo-py

# maturin builds the wheel through pip, from pyproject.toml, into the workspace target dir.
## Builds the wheel and installs it into .venv, with what the Python tests need.
py-install: venv
	@echo "== installing the Python test dependencies"
	$(PIP) install --quiet $(PY_TEST_DEPS)
	@echo "== building the wheel (maturin, release build of the extension) and installing it"
	$(PIP) install --quiet --force-reinstall --no-deps ./python
	@echo "== the wheel is installed"

$(AZURITE): python/tests/package.json
	command -v npm >/dev/null || { echo "npm (Node.js) is required for the Azurite tests"; exit 1; }
	cd python/tests && npm install --no-audit --no-fund --loglevel=error
	touch $@

# pytest against the installed wheel (the emulator, azure-core pipelines over HTTPS, Azurite),
# then mypy --strict on the typing file and stubtest on the package.
## The Python tests: pytest, mypy --strict and stubtest against the installed wheel.
py-test: py-install $(AZURITE)
	$(CARGO) build --release --locked -p imds-emulator
	cd python/tests && $(PY) -m pytest -p no:cacheprovider -q .
	cd python/tests && $(PY) -m mypy --strict --no-incremental typing_check.py
	cd /tmp && $(PY) -m mypy.stubtest imds_cache

## The Python agent of `make demo` alone, against a fresh emulator.
demo-py: py-install
	$(CARGO) build --release --locked -p imds-emulator
	bash tests/demo.sh python
