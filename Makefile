# The two commands: `make demo` runs the worker on a local Kafka with demo data; `make test` runs everything.
SHELL := /bin/bash
VENV := .venv/bin
# Supported: Python 3.11-3.13. .venv (3.11) runs everything; `make test` also runs the unit and agent tests
# on these in .venv-<version>, installed from the same requirements.lock. A missing interpreter fails the
# run; skip them locally with `make test PYTHONS_EXTRA=`.
PYTHONS_EXTRA ?= 3.12 3.13
FAST := -m 'not integration and not slow'

.PHONY: venv sysdeps demo test test-fast test-pythons lint schemas chaos bench kafka-start kafka-stop clean

venv:
	@scripts/bootstrap.sh

# Debian packages the tests need (promtool/prometheus, docker-compose, Java+Maven, python3-venv, postgresql);
# a no-op when they are present. First prerequisite of the test targets, so CI (`make test`) installs them.
sysdeps:
	@scripts/system-deps.sh

demo: venv
	$(VENV)/leadrelay demo

# The other Pythons first (cheap; no broker), so that the full suite's summary is the last line.
test: sysdeps venv lint test-pythons
	$(VENV)/python -m pytest -q

# Local loop: unit + agent tests only, no broker.
test-fast: sysdeps venv
	$(VENV)/python -m pytest -q $(FAST)

# Unit + agent tests on each of PYTHONS_EXTRA, each in its own venv (created or updated by bootstrap).
test-pythons:
	@set -e; for v in $(PYTHONS_EXTRA); do \
	  PYTHON_VERSION=$$v scripts/bootstrap.sh; \
	  echo ".venv-$$v/bin/python -m pytest -q $(FAST) tests/unit tests/agents"; \
	  .venv-$$v/bin/python -m pytest -q $(FAST) tests/unit tests/agents; \
	done

lint: venv
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

# Regenerate schemas/json/ (the published JSON Schemas) from the models; docs/contracts.md. The drift test in
# tests/unit fails `make test` when they are out of date.
schemas: venv
	$(VENV)/python -m schemas.publish

chaos: venv
	$(VENV)/python -m pytest -q -m slow

# Benchmarks (docs/benchmarks.md): core decision time, then the worker on one local broker against plain
# aiokafka and bare Faust baselines (about 5 min on 2 cores). `make bench BENCH_ARGS=--quick`: small N.
bench: venv
	$(VENV)/python -m bench decide worker $(BENCH_ARGS)

kafka-start: venv
	$(VENV)/leadrelay kafka start

kafka-stop: venv
	$(VENV)/leadrelay kafka stop

clean:
	rm -rf .venv .venv-3.* .state .pytest_cache .ruff_cache .mypy_cache
