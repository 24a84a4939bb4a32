# make demo: the WSGI example under load.  make test: lint, types and tests.
# make serve: the WSGI example on http://127.0.0.1:$(PORT)/ until Ctrl-C.
# make bench: greenpool against the alternatives (~6 minutes), into benchmarks/results/.
# Each target installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: test lint types pytest memcached nutcracker libmemcached wrk demo serve bench clean

$(BIN)/python:
	tools/ensure-venv $(PYTHON) $(VENV)

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-demo: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.installed-bench: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

memcached:
	@tools/ensure-memcached

nutcracker:
	@tools/ensure-nutcracker

libmemcached:
	@tools/ensure-libmemcached

wrk:
	@tools/ensure-wrk

test: lint types pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m docutils --halt=warning README.rst /dev/null

types: $(VENV)/.installed-test
	$(BIN)/mypy greenpool examples tools/demo.py benchmarks

pytest: $(VENV)/.installed-test memcached nutcracker libmemcached
	$(BIN)/pytest

demo: $(VENV)/.installed-demo memcached
	$(BIN)/python tools/demo.py

serve: $(VENV)/.installed-demo memcached
	$(BIN)/python examples/wsgi_app.py --port $(PORT)

bench: $(VENV)/.installed-bench memcached nutcracker wrk
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
