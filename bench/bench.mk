# Benchmarks of the gateway against its peers (included by the top Makefile). `make bench-smoke` guards the harness in seconds;
# `make bench` is the full run (about 55 minutes on 2 cores, 30 of them the S8 soak) that writes BENCHMARKS.md and bench/results/.
# The bench extra, and the load client's compiled receive loop (bench/fastrecv.pyx, built in place).
$(BENCH_DEPS): $(VENV)/.installed pyproject.toml bench/fastrecv.pyx
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/cythonize -i -q bench/fastrecv.pyx
	touch $@

.PHONY: bench bench-smoke perf-tool

# Debian's perf, for S3's CPU-by-layer profiles (without it the report says they were skipped).
perf-tool:
	@command -v perf >/dev/null || { echo "installing perf (apt-get)"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }

## Full benchmark run: every scenario for us and the peers; writes BENCHMARKS.md and bench/results/.
bench: $(BENCH_DEPS) $(NODE_DEPS) perf-tool
	$(PY) -m bench.run --profile full

## Tiny run of every scenario (about a minute); fails when the harness produced no sane results.
bench-smoke: $(BENCH_DEPS) $(NODE_DEPS)
	$(PY) -m bench.run --profile smoke
