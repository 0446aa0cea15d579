# credref — run `make help` for the list of targets.
SHELL := /bin/bash
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= var/demo
DEMO_HOUSEHOLDS ?= 100000
# make test spreads whole test modules over this many processes (pytest-xdist)
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help

# uv installs the locked versions (a few times faster than pip, which took about 3 min for a
# fresh environment here); pip only bootstraps uv at the version the lock names. The
# bytecode is compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (this
# machine), nothing else writes it, and every process would compile its imports again
# (a test run took 27 min instead of 19 that way).
UV := $(VENV)/bin/uv
UV_PIN := $(shell grep -E '^uv==' requirements.lock)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q "$(UV_PIN)"
	$(UV) pip install -q --compile-bytecode --python $(PY) -r requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $(STAMP)

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: env
env: $(STAMP) ## Create the virtual environment from requirements.lock

# The demo keeps all its state under $(DEMO_DIR); each run starts from scratch.
# The generated domain ends on DEMO_TODAY: that is the demo's clock (CREDREF_TODAY).
DEMO_TODAY := 2026-09-30
DEMO_ENV := CREDREF_HOME=$(DEMO_DIR) CREDREF_WAREHOUSE=$(DEMO_DIR)/warehouse.duckdb CREDREF_TODAY=$(DEMO_TODAY) CREDREF_ANALYST=demo-analyst CREDREF_FEED_DIR=$(DEMO_DIR)/export/feed
CREDREF := $(DEMO_ENV) $(VENV)/bin/credref

# Every month end from March 2022 to the last one whose 12-month outcome is observed, and
# for training and validation the first day of every month too (half the households each):
# the model learns every position of the calendar, the test year is on month ends.
DEMO_DATES := --from 2022-03-31 --to 2025-08-31 --every 1M --dense-to 2024-08-31

.PHONY: demo
demo: $(STAMP) ## Generate 100k households, ingest, build datasets, train, promote, publish, serve, call it, watch, refresh a day, read the change feed
	rm -rf $(DEMO_DIR)
	$(CREDREF) generate --households $(DEMO_HOUSEHOLDS) --seed 7 --history --feed-days 1 --out $(DEMO_DIR)/export
	$(CREDREF) ingest $(DEMO_DIR)/export
	$(CREDREF) summary
	$(CREDREF) dataset --out $(DEMO_DIR)/dataset --truth $(DEMO_DIR)/export/truth $(DEMO_DATES)
	$(CREDREF) dataset --out $(DEMO_DIR)/dataset_all_published --policy all_published $(DEMO_DATES)
	$(CREDREF) train --config configs/demo.toml
	$(CREDREF) promote --approver demo-reviewer
	$(CREDREF) publish
	$(DEMO_ENV) $(PY) -m credref.demo

# Real use reads CREDREF_* from the environment; without CREDREF_HOME it serves the demo.
SERVE_HOME ?= $(or $(CREDREF_HOME),$(DEMO_DIR))

.PHONY: serve
serve: $(STAMP) ## Start the service (CREDREF_* settings; default home: the demo's)
	CREDREF_HOME=$(SERVE_HOME) $(if $(CREDREF_HOME),,CREDREF_TODAY=$(DEMO_TODAY)) $(VENV)/bin/credref serve

.PHONY: mlflow-ui
mlflow-ui: $(STAMP) ## Open the MLflow UI on the tracking store (default: the demo's) at :5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath $(SERVE_HOME))/mlflow.db --port 5000

.PHONY: notebooks
notebooks: $(STAMP) ## Start Jupyter on notebooks/ (they read CREDREF_HOME; default: the demo's)
	CREDREF_HOME=$(abspath $(SERVE_HOME)) $(VENV)/bin/jupyter notebook --notebook-dir=notebooks

.PHONY: monitor
monitor: $(STAMP) ## credref monitor on the demo state: HTML + JSON report, logged to MLflow
	$(CREDREF) monitor

.PHONY: test
test: $(STAMP) ## Run the whole test suite
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: docs
docs: $(STAMP) ## Regenerate docs/reference.md (commands and settings) from the code
	$(PY) -m credref.reference docs/reference.md

.PHONY: lint
lint: $(STAMP) ## ruff lint + format check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy credref features training serving synth

.PHONY: bench-generate
bench-generate: $(STAMP) ## Benchmark: generate the 11M-household pilot domain
	$(PY) bench/bench_generate.py --households 11000000

.PHONY: bench-features
bench-features: $(STAMP) ## Benchmark: ingest the 11M export, one as-of snapshot vs a full scan
	$(PY) bench/bench_features.py

.PHONY: bench-train
bench-train: $(STAMP) ## Benchmark: credref train on a 2M+ row training set
	$(PY) bench/bench_train.py --households 300000 --root bench/out/train300k

.PHONY: bench-serve
bench-serve: $(STAMP) ## Benchmark: /v1/score under open-loop load after publishing the 11M pilot (needs bench-features and demo)
	$(PY) bench/bench_serve.py --warehouse bench/out/pilot.duckdb --model-home $(DEMO_DIR)

.PHONY: bench-pilot
bench-pilot: $(STAMP) ## Benchmark: the 11M pilot chain, generate -> ingest -> features -> score-all (needs demo)
	$(PY) bench/bench_pilot.py --sizes 11000000 --spark "" --model-home $(DEMO_DIR)

.PHONY: bench-scaling
bench-scaling: $(STAMP) ## Benchmark: features + score-all at 1M, 3M, 11M (DuckDB) and 100k, 300k (Spark)
	$(PY) bench/bench_pilot.py --sizes 1000000,3000000,11000000 --spark 100000,300000 --model-home $(DEMO_DIR)

.PHONY: bench-soak
bench-soak: $(STAMP) ## Benchmark: 10 minutes at 300 requests/s on the 11M snapshot (after bench-serve)
	$(PY) bench/bench_soak.py --home bench/out/serve --model-home $(DEMO_DIR)

.PHONY: bench-changesets
bench-changesets: $(STAMP) ## Benchmark: the 11M pilot as a living warehouse: first load, 92 daily change sets, 10k/100k/1M sets, as-known-at snapshot
	$(PY) bench/bench_changesets.py

.PHONY: bench-known-at
bench-known-at: $(STAMP) ## Benchmark: training as known at T against as known now, on the demo domain (needs demo)
	$(PY) bench/bench_known_at.py

.PHONY: clean
clean: ## Remove generated data (keeps the environment)
	rm -rf var bench/out
