# realtime-admin: `make run` starts the whole stack locally, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
NODE_DEPS := tests/node_modules/.installed
BENCH_DEPS := $(VENV)/.bench-installed

.PHONY: run test lint unit integration fmt clean setup dashboard browser-deps

setup: $(VENV)/.installed $(NODE_DEPS)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(NODE_DEPS): tests/package.json tests/package-lock.json
	cd tests && npm ci --no-audit --no-fund --loglevel=error
	touch $@

DASHBOARD_DEPS := dashboard/node_modules/.installed
DASHBOARD_BUILD := dashboard/dist/index.html
DASHBOARD_SOURCES := $(shell find dashboard/src dashboard/public -type f) dashboard/index.html dashboard/vite.config.ts dashboard/tsconfig.json

## Build the dashboard into dashboard/dist (served by the gateway at /); only when its sources changed.
dashboard: $(DASHBOARD_BUILD)

$(DASHBOARD_DEPS): dashboard/package.json dashboard/package-lock.json
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(DASHBOARD_BUILD): $(DASHBOARD_DEPS) $(DASHBOARD_SOURCES)
	cd dashboard && npm run build
	touch $@

## Start NATS (embedded), collector, gateway on :5006 and demo traffic; print a dev admin token and URL.
## Ctrl-C stops them in order (traffic, gateway, collector, NATS); see scripts/devstack.py.
SIMULATE ?= 1
run: $(VENV)/.installed dashboard
	$(PY) -m scripts.devstack $(if $(filter 0,$(SIMULATE)),--no-simulate,)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

## Lint, type-check and run every test tier (with the benchmark smoke run and the browser tests), then the
## local-cluster failover test.
test: setup lint dashboard browser-deps cluster-nginx $(BENCH_DEPS)
	$(BIN)/pytest -q
	$(BIN)/pytest -q -m cluster tests/cluster

# Debian's Chromium for the browser tests (Playwright cannot download browsers here).
browser-deps:
	@[ -x /usr/bin/chromium ] || { echo "installing chromium (apt-get)"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/pytest -q tests/unit tests/component tests/contracts

integration: setup
	$(BIN)/pytest -q tests/integration

fmt: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) tests/node_modules .run .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -rf dashboard/node_modules dashboard/dist test-artifacts

# The local multi-replica cluster; its targets live beside its config.
-include deploy/local/cluster.mk

# Benchmarks; their targets live beside the harness.
-include bench/bench.mk
