# plantnotify — two commands matter: `make up` and `make test` (see README).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PLUGIN := mosquitto/plugin/plantnotify_auth.so
PYTEST_ARGS ?=

.PHONY: install system venv plugin web services up test test-fast test-plugin-churn test-chaos \
	test-containers test-web-matrix test-schemathesis check lint typecheck clean

## install: all set-up, nothing else (system packages, .venv, npm deps, plugin)
install: system venv web plugin

system:
	@scripts/install-system.sh

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	@echo "venv: installing Python dependencies into $(VENV)..."
	@$(PIP) install -q --upgrade pip
	@$(PIP) install -q -e '.[dev]'
	@touch $@

web:
	@if [ -f web/package.json ]; then $(MAKE) -s -C web; fi

plugin:
	@$(MAKE) -s -C mosquitto/plugin

services:
	@scripts/ensure-services.sh

## up: the whole local stack in the foreground; Ctrl-C stops all of it
up: install services
	@$(VENV)/bin/plantnotify up

## test: installs what is missing, starts services, runs lint, types and the whole suite
test: install services check
	@$(VENV)/bin/pytest $(PYTEST_ARGS)

## test-plugin-churn: the plugin's leak check over 50,000 connects/disconnects (ASan broker)
test-plugin-churn: install services
	@PLANTNOTIFY_PLUGIN_CHURN=50000 $(VENV)/bin/pytest tests/mosquitto/test_plugin_memory.py -k churn -s

## test-schemathesis: the API against its OpenAPI document, 300 generated cases per operation
## and mode (every check; `make test` runs 8)
test-schemathesis: install services
	@SCHEMATHESIS_MAX_EXAMPLES=300 $(VENV)/bin/pytest tests/api/test_schemathesis.py -q

## test-fast: the unit tier only (no PostgreSQL, RabbitMQ or broker; tiers: tests/conftest.py),
## under a minute; the Hypothesis and Schemathesis plugins stay unloaded (no unit test uses them)
test-fast: venv web
	@$(VENV)/bin/pytest -m unit -q -p no:schemathesis -p no:hypothesispytest $(PYTEST_ARGS)

## test-chaos: the NATS cluster under load while a node, a callout, a worker and a bridge die
## (sizes: PLANTNOTIFY_CHAOS_DEVICES / _RATE / _SECONDS; the issue's: 500 devices, 200/s)
test-chaos: install services
	@PLANTNOTIFY_CHAOS=1 $(VENV)/bin/pytest tests/chaos -s $(PYTEST_ARGS)

## test-containers: builds every image and runs docker-compose.yml for real (tests/containers):
## uses the running Docker engine, or starts one of its own and deletes it after; minutes
test-containers: install services $(VENV)/.containers
	@PLANTNOTIFY_CONTAINER_TESTS=1 $(VENV)/bin/pytest tests/containers --timeout=1200 $(PYTEST_ARGS)

$(VENV)/.containers: $(VENV)/.installed
	@$(PIP) install -q -e '.[dev,containers]'
	@touch $@

## test-web-matrix: every long-running browser scenario on both viewports (phone, desktop)
test-web-matrix: install services
	@WEB_MATRIX=1 $(VENV)/bin/pytest tests/web/test_lasting.py tests/web/test_farmer.py

check: venv lint typecheck

lint:
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check . >/dev/null || (echo "ruff format: run '$(VENV)/bin/ruff format .'"; exit 1)
	@$(VENV)/bin/lint-imports --no-cache >/dev/null || $(VENV)/bin/lint-imports --no-cache

typecheck:
	@$(VENV)/bin/mypy

clean:
	@$(MAKE) -s -C mosquitto/plugin clean || true
	rm -rf .run build *.egg-info .pytest_cache .mypy_cache .ruff_cache
