# Every target creates the virtual environment it needs; `make run` and `make test` work on a
# fresh clone with nothing but Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test lint typecheck check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP) ## create .venv with everything the project needs

run: $(STAMP) ## start the embedded local cloud and run one scheduled ingestion (ARGS="--records 5000")
	$(BIN)/python -m localcloud run $(ARGS)

test: $(STAMP) ## run the whole test suite against the embedded local cloud
	$(BIN)/python -m pytest $(ARGS)

.PHONY: bench
bench: $(STAMP) ## pipeline vs floor at 10k/100k/1M per resource, targets checked (ARGS="--quick")
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy

check: lint typecheck test ## everything CI runs

clean: ## remove the virtual environment and local state
	rm -rf $(VENV) .localcloud .pytest_cache .mypy_cache .ruff_cache
