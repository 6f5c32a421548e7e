# The two commands: `make demo` runs the worker on a local Kafka with demo data; `make test` runs everything.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: venv demo test test-fast lint chaos bench kafka-start kafka-stop clean

venv:
	@scripts/bootstrap.sh

demo: venv
	$(VENV)/leadrelay demo

test: venv lint
	$(VENV)/python -m pytest -q

# Local loop: unit + agent tests only, no broker.
test-fast: venv
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
