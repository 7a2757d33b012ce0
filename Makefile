# The two commands of the README: `make run` and `make test`. Only python3 >= 3.11 and make needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint bench clean venv sdk

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# One stamp per extra, redone whenever pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

venv: $(VENV)/.installed-dev

run: $(VENV)/.installed-run
	$(BIN)/momentcast serve

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (lint and format), mypy strict over the package and the tests, the layer contracts.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check service tests benchmarks
	$(BIN)/ruff format --check service tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(VENV)/.installed-test
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

# The SDK's npm package, built from service/static/ (sdk/build.mjs): sdk/momentcast-<version>.tgz.
sdk:
	cd sdk && npm pack

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
