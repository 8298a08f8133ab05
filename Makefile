# Every target sets up its own .venv first, so a fresh clone needs nothing but Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast check native fmt lint types imports pytest bench soak schema lock clean

# The versions tests, CI and the demo run with are the ones in constraints.txt, pip and the setuptools that builds
# strangler included (pyproject.toml's ranges stay what a user's install may take): a release of mypy, ruff, deepdiff
# or setuptools can then change nothing until `make lock` takes it.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "strangler needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade -c constraints.txt pip
	$(BIN)/python -m pip install --quiet -c constraints.txt --build-constraint constraints.txt -e '.[dev]'
	touch $(STAMP)

## make lock: resolve pyproject.toml's ranges afresh in a scratch venv and write what they give to constraints.txt
## (then run make test: the new versions are the ones it checks).
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install --quiet --upgrade pip
	build/lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; build/lock-venv/bin/python -m pip freeze --all --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf build/lock-venv

## make native: compile the request path with mypyc into build/native/ (proxy/native.py says why); nothing to do
## while the build matches the sources. A failed build says so and leaves strangler on pure Python.
native: $(STAMP)
	$(BIN)/python -m proxy.native_build

## make demo: set up, start the bundled legacy and new apps and the proxy, drive traffic, print the report.
demo: native
	$(BIN)/strangler demo --config routes.yaml

## make test: set up, then formatting check, lint, mypy --strict, import contracts and the test suite.
test: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m proxy.native_build
	$(BIN)/pytest

## make test-fast: set up, then only the pure-function tests (marker `unit`: no sockets, processes or files).
test-fast: $(STAMP)
	$(BIN)/pytest -q -m unit

## make check: like test, but formats the code first (run it before every commit).
check: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m proxy.native_build
	$(BIN)/pytest

## make bench: back end direct vs strangler vs nginx (when installed), side by side in one run.
bench: native
	$(BIN)/python -m benchmarks.run

## make soak: strangler under load while back ends die and flap, routes.yaml changes and the store fills once;
## prints the checks table (exit 1 when one fails). 10 minutes by default: SOAK_SECONDS=60 make soak.
soak: native
	$(BIN)/python -m benchmarks.soak

## make schema: regenerate docs/routes.schema.json and README.md's key table from the key tables (proxy/config/schema.py).
schema: $(STAMP)
	$(BIN)/python -m proxy.config.keydocs --json > docs/routes.schema.json
	$(BIN)/python -m proxy.config.keydocs --readme README.md

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache *.egg-info
