# medsecrets developer targets. Every target sets up .venv itself (fast when current).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test lint bench venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## run: start a development server on the embedded SQLite store (data in ./.medsecrets)
run: $(STAMP)
	$(VENV)/bin/medsecrets server --dev

## test: install everything the tests need and run them
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## lint: ruff and mypy --strict on src/
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## bench: run the benchmarks; figures go to docs/benchmarks.md
bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
