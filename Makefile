# The two commands: `make demo` runs the worker on a local Kafka with demo data; `make test` runs everything.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: venv sysdeps demo test test-fast lint chaos bench kafka-start kafka-stop clean

venv:
	@scripts/bootstrap.sh

# Debian packages the tests need (promtool/prometheus, docker-compose, Java+Maven, python3-venv); a
# no-op when they are present. First prerequisite of the test targets, so CI (`make test`) installs them.
sysdeps:
	@scripts/system-deps.sh

demo: venv
	$(VENV)/leadrelay demo

test: sysdeps venv lint
	$(VENV)/python -m pytest -q

# Local loop: unit + agent tests only, no broker.
test-fast: sysdeps venv
	$(VENV)/python -m pytest -q -m 'not integration and not slow'

lint: venv
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

chaos: venv
	$(VENV)/python -m pytest -q -m slow

bench: venv
	$(VENV)/python -m bench

kafka-start: venv
	$(VENV)/leadrelay kafka start

kafka-stop: venv
	$(VENV)/leadrelay kafka stop

clean:
	rm -rf .venv .state .pytest_cache .ruff_cache .mypy_cache
