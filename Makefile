# Every target installs what it needs from the lock file; nothing is assumed to be on the machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SAGEMAKER_SUPPRESS_V2_WARNING := 1
export PYTHONDONTWRITEBYTECODE := 1
# ...so every environment is installed with its bytecode compiled (as pip does in the jobs image and
# `sam build` for the functions): without it every process (each job host, Ray worker, Lambda
# invocation, test run) compiles what it imports from source, 3-4x the import time.
UV_INSTALL := uv pip install -q --compile-bytecode
# What runs where: the project venv (.venv) is Python 3.11 (the jobs, the local cloud, the CLI, most
# tests; pyproject.toml's requires-python); the functions run on their Lambda runtime, python3.13
# (template.yaml): the local Lambda runtime and the function tests (.venv-lambda) use Python 3.13,
# and sam build needs it too. pyenv's shims answer for python3.12/python3.13 only when PYENV_VERSION
# names them (harmless where pyenv is absent).
export PYENV_VERSION ?= 3.11.7:3.12.1:3.13.0
LAMBDA_PYTHON := 3.13
LAMBDA_VENV := .venv-lambda
LAMBDA_STAMP := $(LAMBDA_VENV)/.installed

.PHONY: venv lambda-venv jobs-env asl-validator demo test test-fast bench bench-scale lock lock-lambda definition clean browser tools lock-tools lint-template sam-build publish deploy

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -m pip --version >/dev/null 2>&1 || { echo "pip is required"; exit 1; }
	@test -x $(VENV)/bin/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q uv==0.13.9; }
	$(BIN)/$(UV_INSTALL) --python $(BIN)/python -r requirements.lock
	$(BIN)/$(UV_INSTALL) --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

## The functions' runtime for their tests: Python $(LAMBDA_PYTHON), the Lambda runtime's SDK, the Powertools
## layer's packages, moto and pytest (requirements-lambda.lock); never the project's other packages.
$(LAMBDA_STAMP): requirements-lambda.lock $(STAMP)
	@test -x $(LAMBDA_VENV)/bin/python || $(BIN)/uv venv -q --python $(LAMBDA_PYTHON) $(LAMBDA_VENV)
	$(BIN)/$(UV_INSTALL) --python $(LAMBDA_VENV)/bin/python -r requirements-lambda.lock
	@touch $(LAMBDA_STAMP)

lambda-venv: $(LAMBDA_STAMP)

## The jobs image's environment without Docker (jobs/Dockerfile's Python, its pins with --no-deps,
## its ENV, only what it copies to WORKDIR): jobs, the local Ray head and model servers run in it.
## Built once into .venv-jobs/, rebuilt when the pins change; a no-op otherwise.
jobs-env: $(STAMP)
	$(BIN)/python -m local.jobs_image

## The main job, locally: CSV -> registered, approved, deployed model on a local cloud.
demo: $(STAMP) jobs-env
	$(BIN)/mlops demo

## Headless Chromium (Debian package) for the tests that look at a rendered page.
browser:
	@bash scripts/ensure_chromium.sh

## asl-validator (npm, pinned by statemachines/package-lock.json) for the state machine's offline check
## (tests/unit/test_deploy_asl.py); reinstalled when the lock file changes.
ASL_STAMP := statemachines/node_modules/.installed
$(ASL_STAMP): statemachines/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is required (Debian: apt-get install npm) for asl-validator"; exit 1; }
	npm ci --prefix statemachines --no-audit --no-fund --loglevel=error
	@touch $(ASL_STAMP)

asl-validator: $(ASL_STAMP)

## Every test (unit, integration on moto server, infrastructure checks); the handlers' tests
## (tests/unit/functions) on the functions' runtime.
test: $(STAMP) $(LAMBDA_STAMP) browser tools jobs-env asl-validator
	$(BIN)/python -m pytest -q -ra --ignore=tests/unit/functions
	$(LAMBDA_VENV)/bin/python -m pytest -q -ra tests/unit/functions

test-fast: $(STAMP) $(LAMBDA_STAMP) tools jobs-env asl-validator
	$(BIN)/python -m pytest -q -ra -m "not slow" --ignore=tests/unit/functions
	$(LAMBDA_VENV)/bin/python -m pytest -q -ra -m "not slow" tests/unit/functions

bench: $(STAMP)
	$(BIN)/python -m bench

## The cost curve: P4 at 100k, 1M and 10M rows with each step's peak memory and where this machine
## runs out (bench/RESULTS-scale.md). Not part of `make bench`: 10M rows take far longer than its budget.
bench-scale: $(STAMP) jobs-env
	$(BIN)/python -m bench.scale $(if $(SIZES),--sizes $(SIZES))

## Regenerate the pipeline definitions (training, drift monitor, scoring) from jobs/*pipeline.py (tests check they are current).
definition: $(STAMP)
	$(BIN)/python -m jobs.pipeline --write jobs/pipeline_definition.json
	$(BIN)/python -m jobs.drift_pipeline --write jobs/drift_pipeline_definition.json
	$(BIN)/python -m jobs.scoring_pipeline --write jobs/scoring_pipeline_definition.json

lock:
	$(BIN)/uv pip compile requirements.in -o requirements.lock --python-version 3.11

lock-lambda:
	$(BIN)/uv pip compile requirements-lambda.in -o requirements-lambda.lock --python-version $(LAMBDA_PYTHON)

# ---------- Deploy to AWS (docs/deploy.md) ----------
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
ENV ?= dev
PUBLISH_ARGS = --config-env $(ENV) $(if $(IMAGE_URI),--image-uri $(IMAGE_URI)) $(foreach o,$(OVERRIDES),--parameter-override $(o))

$(TOOLS_STAMP): requirements-tools.lock $(STAMP)
	@test -x $(TOOLS)/bin/python || $(BIN)/uv venv -q --python $(PYTHON) $(TOOLS)
	$(BIN)/$(UV_INSTALL) --python $(TOOLS)/bin/python -r requirements-tools.lock
	@touch $(TOOLS_STAMP)

## aws-sam-cli and checkov, in their own virtualenv (their pins clash with requirements.lock).
tools: $(TOOLS_STAMP)

lock-tools:
	$(BIN)/uv pip compile requirements-tools.in -o requirements-tools.lock --python-version 3.11

## cfn-lint and checkov on template.yaml (skips are justified in .checkov.yaml and the template).
lint-template: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/cfn-lint template.yaml
	BC_SKIP_MAPPING=TRUE $(TOOLS)/bin/checkov -f template.yaml --config-file .checkov.yaml

## ...then compiles the built functions and layer with the runtime's Python: Lambda's code directories are
## read-only, so source would be compiled again on every cold start (local/aws/lambda_packages.py).
sam-build: $(TOOLS_STAMP) $(STAMP)
	SAM_CLI_TELEMETRY=0 $(TOOLS)/bin/sam build --config-env $(ENV)
	$(BIN)/python -m local.aws.lambda_packages --compile .aws-sam/build

## Jobs image to ECR and pipeline definition to S3; prints the stack's parameter overrides.
publish: $(STAMP)
	$(BIN)/python scripts/publish.py $(PUBLISH_ARGS)

## make deploy ENV=dev|prod [IMAGE_URI=...] [OVERRIDES="Key=Value ..."]: build, publish, sam deploy.
deploy: sam-build
	$(BIN)/python scripts/publish.py $(PUBLISH_ARGS) --deploy --sam $(TOOLS)/bin/sam

clean:
	rm -rf .mlops-local .pytest_cache .cache/lambda
