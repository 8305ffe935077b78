# img2video — every target works on a fresh clone with only Python >= 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCAL_STAMP := $(VENV)/.installed-local
# `make build` only: the SAM CLI in its own venv (it pins dependencies that clash with .venv's).
SAM_VENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
SAM := $(SAM_VENV)/bin/sam
# Prints the real Python 3.13 (python3.13 on PATH, a pyenv shim resolved, else any pyenv 3.13.x); prints nothing if there is none.
FIND_PYTHON313 := { python3.13 -c 'import sys; assert sys.version_info[:2] == (3, 13); print(sys.executable)' 2>/dev/null \
	|| for p in "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.13*/bin/python3.13; do \
		"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13); print(sys.executable)' 2>/dev/null && break; done; } | head -n 1
NO_PYTHON313 := make build: needs Python 3.13 (sam build runs pip under the functions' python3.13 runtime): install it (pyenv install 3.13, or your package manager) and retry, or where Docker exists run 'sam build --use-container' instead

.PHONY: help demo test docs lint format typecheck check-deploy pre-commit pre-commit-install unit template integration bench chaos burst build python313 clean
.DEFAULT_GOAL := help

help:  ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## /\1\t/' | awk -F'\t' '{printf "  make %-19s %s\n", $$1, $$2}'

# `make demo` installs only what local mode needs; the tests, linters and type checker come with the first `make test`.
# PYTHONWARNINGS=ignore keeps setuptools' build-time advice about editable installs off the screen.
$(LOCAL_STAMP): requirements-local.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-local.txt
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(LOCAL_STAMP)

$(STAMP): $(LOCAL_STAMP) requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

demo: $(LOCAL_STAMP)  ## run the whole pipeline offline; writes ./img2video-out/*.mp4
	$(BIN)/img2video demo

# The suite runs in 4 processes (pytest-xdist): its tests mostly wait on local mode's clocks, not on the CPU. Work
# stealing: an idle process takes tests queued for a busy one, so a long test started late does not end the run alone.
PYTEST_WORKERS ?= 4
test: lint typecheck check-deploy $(STAMP)  ## ruff, cfn-lint, mypy, the deploy check + the whole pytest suite
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist worksteal

docs: $(STAMP)  ## write docs/reference/models.md from the model registry
	PYTHONPATH=layers/img2video:local $(BIN)/python -m img2video_local.models_doc

lint: $(STAMP)  ## ruff (rules and formatting), the package's import contracts, cfn-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=layers/img2video $(BIN)/lint-imports
	$(BIN)/cfn-lint template.yaml

format: $(STAMP)  ## ruff format, then ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)  ## mypy, strict
	$(BIN)/mypy layers/img2video/img2video local/img2video_local

# asl-validator from npm, pinned, in its own folder (Node.js and npm come with the machine).
ASL_VALIDATOR_VERSION := 4.0.0
ASL_VALIDATOR := .npm-tools/node_modules/.bin/asl-validator
$(ASL_VALIDATOR):
	npm install --silent --no-audit --no-fund --prefix .npm-tools asl-validator@$(ASL_VALIDATOR_VERSION)

# checkov in its own venv, pinned: its dependencies clash with .venv's pins.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $(CHECKOV_STAMP)

check-deploy: $(STAMP) $(ASL_VALIDATOR) $(CHECKOV_STAMP)  ## what CloudFormation and Step Functions would refuse: SAM translation, cfn-lint on both forms, cycles, asl-validator, checkov
	ASL_VALIDATOR=$(ASL_VALIDATOR) CHECKOV=$(CHECKOV_VENV)/bin/checkov $(BIN)/python -m img2video_local.deploy_check

# pre-commit in its own venv, pinned; its hooks use .venv's linters, and PyPI for the rest (.pre-commit-config.yaml).
PRE_COMMIT_VERSION := 4.7.0
PRE_COMMIT_VENV := .venv-pre-commit
PRE_COMMIT_STAMP := $(PRE_COMMIT_VENV)/.installed-$(PRE_COMMIT_VERSION)
$(PRE_COMMIT_STAMP):
	test -x $(PRE_COMMIT_VENV)/bin/python || $(PYTHON) -m venv $(PRE_COMMIT_VENV)
	$(PRE_COMMIT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PRE_COMMIT_VENV)/bin/python -m pip install --quiet pre-commit==$(PRE_COMMIT_VERSION)
	touch $(PRE_COMMIT_STAMP)

pre-commit: $(STAMP) $(PRE_COMMIT_STAMP)  ## every pre-commit hook on every file (ruff, formatting, import contracts, cfn-lint, JSON/YAML/TOML, secrets)
	$(PRE_COMMIT_VENV)/bin/pre-commit run --all-files

pre-commit-install: $(STAMP) $(PRE_COMMIT_STAMP)  ## run the hooks before each commit
	$(PRE_COMMIT_VENV)/bin/pre-commit install

unit: $(STAMP)  ## the unit, local-mode and template tests (no whole-pipeline runs)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist worksteal tests/unit tests/local tests/template

integration: $(STAMP)  ## the whole-pipeline tests only (local mode)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist worksteal tests/integration

bench: $(STAMP)  ## polling, store and submit memory, the image check, import time (each prints a table)
	$(BIN)/python bench/polling.py
	$(BIN)/python bench/store_memory.py
	$(BIN)/python bench/submit_memory.py
	$(BIN)/python bench/image_check.py
	$(BIN)/python bench/import_time.py

chaos: $(STAMP)  ## 200 jobs under random mixed faults; fails on any broken promise
	$(BIN)/python bench/chaos.py --jobs 200

burst: $(STAMP)  ## 500 uploads at once against a provider concurrency limit of 5
	$(BIN)/python bench/burst.py --jobs 500 --limit 5

$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	rm -f $(SAM_VENV)/.installed-*
	touch $(SAM_STAMP)

python313:  ## print the Python 3.13 that `make build` uses; fails if there is none
	@py=$$($(FIND_PYTHON313)); test -n "$$py" || { echo "$(NO_PYTHON313)" >&2; exit 1; }; echo "$$py"

build: python313 $(SAM_STAMP)  ## sam build into .aws-sam/build: the layer gets manylinux aarch64 wheels (BuildArchitecture arm64)
	@py=$$($(FIND_PYTHON313)); test -n "$$py" || { echo "$(NO_PYTHON313)" >&2; exit 1; }; \
	set -x; PATH="$$(dirname "$$py"):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM) build --template-file template.yaml --cached --parallel

clean:  ## remove every venv, cache and output this Makefile made
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(PRE_COMMIT_VENV) .import_linter_cache .npm-tools .pytest_cache .ruff_cache .mypy_cache img2video-out .aws-sam
