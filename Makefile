# img2video — every target works on a fresh clone with only Python >= 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit template integration bench chaos burst clean

$(STAMP): requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)  ## run the whole pipeline offline; writes ./img2video-out/*.mp4
	$(BIN)/img2video demo

test: lint typecheck $(STAMP)  ## ruff, cfn-lint, mypy + the whole pytest suite (unit, template, integration)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/cfn-lint template.yaml

typecheck: $(STAMP)
	$(BIN)/mypy layers/img2video/img2video local/img2video_local

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/template

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)  ## polling, store memory, import time (each prints a table)
	$(BIN)/python bench/polling.py
	$(BIN)/python bench/store_memory.py
	$(BIN)/python bench/import_time.py

chaos: $(STAMP)  ## 200 jobs under random mixed faults; fails on any broken promise
	$(BIN)/python bench/chaos.py --jobs 200

burst: $(STAMP)  ## 500 uploads at once against a provider concurrency limit of 5
	$(BIN)/python bench/burst.py --jobs 500 --limit 5

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache img2video-out .aws-sam
