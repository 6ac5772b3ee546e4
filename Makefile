# medsecrets developer targets. Every target sets up .venv itself (fast when current).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: run test lint bench bench-paired venv clean

# The core install (server, CLI, SDK) and the full one (every extra + test tools).
$(VENV)/.core: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip
	@$(PIP) -e .
	@touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.core
	@$(PIP) -e '.[dev]'
	@touch $@

$(VENV)/.bench: pyproject.toml $(VENV)/.dev
	@$(PIP) -e '.[bench]'
	@touch $@

venv: $(VENV)/.dev

## run: start a development server on the embedded SQLite store (data in ./.medsecrets)
run: $(VENV)/.core
	$(VENV)/bin/medsecrets server --dev $(ARGS)

## test: install everything the tests need and run them
test: $(VENV)/.dev
	$(PY) -m pytest $(PYTEST_ARGS)

## lint: ruff, mypy --strict on src/, and the import-layer contracts
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## bench: run the benchmarks (installs wrk if missing); figures go to docs/benchmarks.md
bench: $(VENV)/.bench
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(PY) -m benchmarks

## bench-paired: the working tree's secret read (ARGS="--load write": writes) against BASE's (default HEAD), in alternating rounds
bench-paired: $(VENV)/.bench
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(PY) -m benchmarks.paired --base $(or $(BASE),HEAD) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
