# Two commands do all the set-up: `make run` starts the app, `make test` runs the tests.
# Both create or update .venv when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, on its own, so the right build is chosen once.
# The default pin is the CPU build on machines that carry it locally and the
# CUDA build on PyPI elsewhere; see README "On a GPU box" for TORCH_INDEX.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_INDEX_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple,)
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n 2

.PHONY: run test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH_INDEX_ARGS) "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/lmwb

# The linter and the format check, the type checker over engine/ and tui/ (pyproject.toml's [tool.mypy]),
# then the architecture contract (engine/ never imports the UI; docs/architecture.md names what modules share).
# `make test` runs these first.
LINTED := engine tui tests bench scripts
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_architecture.py

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
