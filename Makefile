# make test: lint, types and tests.  Each target installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test lint types pytest memcached clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

memcached:
	@tools/ensure-memcached

test: lint types pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m docutils --halt=warning README.rst /dev/null

types: $(VENV)/.installed-test
	$(BIN)/mypy greenpool

pytest: $(VENV)/.installed-test memcached
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build *.egg-info
