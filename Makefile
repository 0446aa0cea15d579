# credref — run `make help` for the list of targets.
SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= var/demo
DEMO_HOUSEHOLDS ?= 100000

.DEFAULT_GOAL := help

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: env
env: $(STAMP) ## Create the virtual environment from requirements.lock

.PHONY: demo
demo: $(STAMP) ## Generate a demo domain (100k households), ingest it, print the per-city summary
	$(VENV)/bin/credref generate --households $(DEMO_HOUSEHOLDS) --seed 7 --out $(DEMO_DIR)/export
	CREDREF_WAREHOUSE=$(DEMO_DIR)/warehouse.duckdb $(VENV)/bin/credref ingest $(DEMO_DIR)/export
	CREDREF_WAREHOUSE=$(DEMO_DIR)/warehouse.duckdb $(VENV)/bin/credref summary

.PHONY: test
test: $(STAMP) ## Run the whole test suite
	$(PY) -m pytest

.PHONY: lint
lint: $(STAMP) ## ruff lint + format check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy credref features

.PHONY: bench-generate
bench-generate: $(STAMP) ## Benchmark: generate the 11M-household pilot domain
	$(PY) bench/bench_generate.py --households 11000000

.PHONY: clean
clean: ## Remove generated data (keeps the environment)
	rm -rf var bench/out
