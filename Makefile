# realtime-admin: `make run` starts the whole stack locally, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
NODE_DEPS := tests/node_modules/.installed

.PHONY: run test lint unit integration bench fmt clean setup

setup: $(VENV)/.installed $(NODE_DEPS)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(NODE_DEPS): tests/package.json tests/package-lock.json
	cd tests && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## Start NATS (embedded), collector, gateway on :5006 and demo traffic; print a dev admin token and URL.
SIMULATE ?= 1
run: $(VENV)/.installed
	$(PY) -m scripts.devstack $(if $(filter 0,$(SIMULATE)),--no-simulate,)

## Lint, type-check and run every test tier.
test: setup lint
	$(BIN)/pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/pytest -q tests/unit tests/component

integration: setup
	$(BIN)/pytest -q tests/integration

fmt: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) tests/node_modules .run .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Local multi-replica cluster (issue #6); its targets live beside its config.
-include deploy/local/cluster.mk

# Benchmarks (issue #7); targets live beside the harness.
-include bench/bench.mk
