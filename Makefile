# Every target creates the virtual environment it needs; `make run` and `make test` work on a
# fresh clone with nothing but Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
STAGE ?= dev
LOCAL_STAGE ?= localstack
LOCALSTACK_URL ?= http://localhost:4566
FUNCTION ?= ingest
# The local targets talk to an emulator only: its endpoint, dummy credentials, no profile.
LOCAL_AWS = env -u AWS_PROFILE -u AWS_SESSION_TOKEN \
	AWS_ENDPOINT_URL=$${AWS_ENDPOINT_URL:-$(LOCALSTACK_URL)} \
	AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1}

.DEFAULT_GOAL := help
.PHONY: help venv lock run up down report test test-fast browser lint typecheck check clean security
.PHONY: deploy deploy-local package destroy destroy-local invoke-local

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

# Installed from the locks only (every version pinned, every file hashed): requirements-dev.txt
# holds the Lambda set of requirements.txt plus the tools. Edit requirements*.in, then `make lock`.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP) ## create .venv with everything the project needs, from the hashed locks

lock: $(STAMP) ## re-lock requirements*.in into requirements*.txt (needs PyPI; ARGS="--upgrade")
	$(BIN)/python -m infra.locks compile $(ARGS)

run: $(STAMP) ## start the embedded local cloud and run one scheduled ingestion (ARGS="--records 5000")
	$(BIN)/python -m localcloud run $(ARGS)

up: $(STAMP) ## start the local cloud, deploy the stage, print its endpoints, stay up until Ctrl-C or make down (ARGS="--records 5000")
	$(BIN)/python -m localcloud up $(ARGS)

down: $(STAMP) ## stop the cloud `make up` started, and every process it started
	$(BIN)/python -m localcloud down

report: $(STAMP) ## run the local cloud and write its health report to .localcloud/report/ (ARGS="--runs 3")
	$(BIN)/python -m localcloud report --out .localcloud/report $(ARGS)

# pytest's options are in pyproject.toml: 2 xdist workers, random order, a per-test timeout.
test: $(STAMP) ## run every tier (unit, integration, e2e) in parallel against the embedded local cloud (installs Chromium for the report test as root on Debian)
	@$(BIN)/python -m tests.browser --install || true
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP) ## the unit tier only: no emulated service, under a minute (ARGS="-k source")
	$(BIN)/python -m pytest tests/unit $(ARGS)

.PHONY: bench
bench: $(STAMP) ## time to verdict of localcloud run vs the floor (20k/100k), memory to 1M, defaults sweep; targets checked, one results file (ARGS="--quick")
	$(BIN)/python -m bench $(ARGS)

browser: ## headless Chromium for the report test: apt-get as root on Debian, else says what to install
	@$(PYTHON) -m tests.browser --install

lint: $(STAMP) ## ruff, and the locks still match requirements*.in (offline)
	$(BIN)/python -m infra.locks check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy

# The audit prints what it could audit; with no vulnerability service reachable it warns loudly
# and exits 0 unless AUDIT_REQUIRED=1 (docs/operations.md, "Security checks").
security: $(STAMP) ## bandit on the code; pip-audit on the locks, saying what it audited (AUDIT_REQUIRED=1)
	$(BIN)/bandit -q -c pyproject.toml -r .
	$(BIN)/python -m infra.dependency_audit

check: lint typecheck security test ## everything CI runs

clean: ## remove the virtual environment and local state
	rm -rf $(VENV) .localcloud .pytest_cache .mypy_cache .ruff_cache

deploy: $(STAMP) ## deploy infra + app to the AWS account of the environment (STAGE=dev), then check it
	$(BIN)/python -m infra.deploy deploy --stage $(STAGE)
	$(BIN)/python -m infra.deploy status --stage $(STAGE) --check

deploy-local: $(STAMP) ## the same against AWS_ENDPOINT_URL (default LocalStack), LOCAL_STAGE=localstack
	$(LOCAL_AWS) $(BIN)/python -m infra.deploy deploy --stage $(LOCAL_STAGE)
	$(LOCAL_AWS) $(BIN)/python -m infra.deploy status --stage $(LOCAL_STAGE) --check

package: $(STAMP) ## write CloudFormation (SAM) and Terraform packages to out/STAGE/
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(BIN)/python -m infra.deploy package --stage $(STAGE) --out out

destroy: $(STAMP) ## remove STAGE (functions, infra and their data) from the AWS account; asks first
	$(BIN)/python -m infra.deploy destroy --stage $(STAGE)

destroy-local: $(STAMP) ## remove LOCAL_STAGE from AWS_ENDPOINT_URL (default LocalStack)
	$(LOCAL_AWS) $(BIN)/python -m infra.deploy destroy --stage $(LOCAL_STAGE) --yes

invoke-local: $(STAMP) ## invoke a function deployed by deploy-local (FUNCTION=ingest) and print its answer
	$(LOCAL_AWS) $(BIN)/python -m infra.deploy invoke --stage $(LOCAL_STAGE) $(FUNCTION)
