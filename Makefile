# Every target installs what it needs from the lock file; nothing is assumed to be on the machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SAGEMAKER_SUPPRESS_V2_WARNING := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv demo test test-fast bench lock definition clean browser

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -m pip --version >/dev/null 2>&1 || { echo "pip is required"; exit 1; }
	@test -x $(VENV)/bin/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q uv==0.13.9; }
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

## The main job, locally: CSV -> registered, approved, deployed model on a local cloud.
demo: $(STAMP)
	$(BIN)/mlops demo

## Headless Chromium (Debian package) for the tests that look at a rendered page.
browser:
	@bash scripts/ensure_chromium.sh

## Every test (unit, integration on moto server, infrastructure checks).
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -ra

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench

## Regenerate jobs/pipeline_definition.json from jobs/pipeline.py (a test checks it is current).
definition: $(STAMP)
	$(BIN)/python -m jobs.pipeline --write jobs/pipeline_definition.json

lock:
	$(BIN)/uv pip compile requirements.in -o requirements.lock --python-version 3.11

clean:
	rm -rf .mlops-local .pytest_cache
