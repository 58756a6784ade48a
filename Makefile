# reelfm: the README's commands. Every target creates the virtual environment if it is missing.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
export REELFM_HOME ?= $(CURDIR)/.reelfm
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: help setup demo test ui mlflow-ui lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@command -v java >/dev/null || { echo "Java 17 is required for Spark (java not found on PATH)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	@echo "Warming the Ivy cache with Delta Lake's jars (Maven Central)..."
	$(PY) -m pipelines.spark_session
	touch $@

setup: $(VENV)/.installed  ## create .venv, install pinned dependencies, cache Delta's jars

demo: setup  ## generate synthetic data and materialize the whole asset graph (embedded default)
	$(PY) -m jobs.cli demo $(ARGS)

test: setup  ## run the test suite (real Spark, Delta, MLflow on SQLite)
	$(PY) -m pytest $(ARGS)

ui: setup  ## Dagster UI on http://127.0.0.1:3000 with the project's Definitions
	mkdir -p $(REELFM_HOME)/dagster
	test -f $(REELFM_HOME)/dagster/dagster.yaml || cp infra/embedded/dagster.yaml $(REELFM_HOME)/dagster/
	DAGSTER_HOME=$(REELFM_HOME)/dagster $(VENV)/bin/dagster dev -m jobs.definitions -h 127.0.0.1 -p 3000

mlflow-ui: setup  ## MLflow UI on http://127.0.0.1:5000 over the embedded SQLite store
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(REELFM_HOME)/mlflow.db -h 127.0.0.1 -p 5000

lint: setup  ## ruff
	$(VENV)/bin/ruff check pipelines assets jobs tests benchmarks

clean:  ## remove the embedded lake, MLflow store and Dagster instance (not the venv)
	rm -rf $(REELFM_HOME)
