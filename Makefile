# make demo: the WSGI example under load.  make test: lint, types and tests (docs and packaging included).
# make serve: the WSGI example on http://127.0.0.1:$(PORT)/ until Ctrl-C.
# make docs: the documentation site, into build/docs/html/ (warnings are errors).
# make matrix: the tests on every CPython from 3.10 to 3.13 found here (noxfile.py).
# make dist: the sdist and the wheel, into dist/, checked as PyPI would.
# make bench: greenpool against the alternatives (~6 minutes), into benchmarks/results/.
# Each target installs what it needs (the dependency groups of pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: test lint types docs pytest matrix dist memcached nutcracker libmemcached wrk demo serve bench clean

$(BIN)/python:
	tools/ensure-venv $(PYTHON) $(VENV)

$(VENV)/.installed-%: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e . --group $*
	touch $@

memcached:
	@tools/ensure-memcached

nutcracker:
	@tools/ensure-nutcracker

libmemcached:
	@tools/ensure-libmemcached

wrk:
	@tools/ensure-wrk

test: lint types pytest  # pytest builds the docs too, warnings as errors (tests/test_docs.py)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m docutils --halt=warning README.rst /dev/null

types: $(VENV)/.installed-dev
	$(BIN)/mypy greenpool examples tools/demo.py benchmarks

docs: $(VENV)/.installed-dev
	$(BIN)/sphinx-build -W --keep-going -q -b html docs build/docs/html

pytest: $(VENV)/.installed-dev memcached nutcracker libmemcached
	$(BIN)/pytest

matrix: $(VENV)/.installed-dev memcached nutcracker libmemcached
	$(BIN)/nox $(NOX_ARGS)

dist: $(VENV)/.installed-dev
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

demo: $(VENV)/.installed-demo memcached
	$(BIN)/python tools/demo.py

serve: $(VENV)/.installed-demo memcached
	$(BIN)/python examples/wsgi_app.py --port $(PORT)

bench: $(VENV)/.installed-bench memcached nutcracker wrk
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build dist .nox *.egg-info
