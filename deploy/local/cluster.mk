# `make cluster`: the production topology on this machine (see deploy/local/cluster.py and deploy/README.md).
# Included by the top-level Makefile; uses its PY, BIN and VENV.
CLUSTER_PORT ?= 5006
CLUSTER_RUN_DIR ?= .run/cluster
CLUSTER_SIMULATE ?= 1
CLUSTER_PY := $(PY) deploy/local/cluster.py --run-dir $(CLUSTER_RUN_DIR)
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: cluster cluster-down cluster-status test-cluster cluster-nginx

## 3-node NATS cluster, 3 gateways, collector, simulator and nginx on :$(CLUSTER_PORT), in the background.
cluster: $(VENV)/.installed cluster-nginx
	$(CLUSTER_PY) up --port $(CLUSTER_PORT) $(if $(filter 0,$(CLUSTER_SIMULATE)),--no-simulate,)

## Stop everything `make cluster` started.
cluster-down:
	@if [ -x $(PY) ]; then $(CLUSTER_PY) down; else echo "no $(PY): nothing to stop"; fi

cluster-status: $(VENV)/.installed
	$(CLUSTER_PY) status

## Failover test on the same topology (free ports; does not touch a running `make cluster`).
test-cluster: setup cluster-nginx
	$(BIN)/pytest -q -m cluster tests/cluster

# nginx from the Debian packages, installed when missing.
cluster-nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
		echo "installing nginx (apt-get)"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null \
			|| $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
