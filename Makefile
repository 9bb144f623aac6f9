# Two entry points for a newcomer: `make demo` (the main job, end to end) and `make test` (everything CI runs).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The pinned agent CLIs are installed once per machine into this cache, never into the repository.
export CONVEYOR_CLI_CACHE ?= $(HOME)/.cache/conveyor/agent-clis
PYTEST_WORKERS ?= 2

.PHONY: setup clis demo test lint typecheck unit bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

clis: setup
	$(BIN)/python -m tests.support.agent_clis install all

demo: clis
	$(BIN)/python scripts/demo.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

typecheck: setup
	$(BIN)/mypy

test: lint typecheck clis
	$(BIN)/pytest -n $(PYTEST_WORKERS) --durations=15

unit: setup
	$(BIN)/pytest -n $(PYTEST_WORKERS) tests/unit

bench: clis
	$(BIN)/python scripts/bench.py

bench-quick: clis
	$(BIN)/python scripts/bench.py --quick

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
