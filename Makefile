# The two commands users start with: `make demo` and `make test`. Both build .venv from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The web UI's type check: TypeScript from package-lock.json (a dev tool; the UI ships plain JS).
NODE_STAMP := node_modules/.installed

.PHONY: demo test unit lint typecheck pytest bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(VENV)/.runtime

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $(NODE_STAMP)

demo: $(VENV)/.runtime
	$(BIN)/meshtrace up --traffic 5

test: $(STAMP) lint typecheck pytest

lint: $(STAMP) $(NODE_STAMP)
	$(BIN)/ruff check meshtrace tests bench
	$(BIN)/ruff format --check meshtrace tests bench
	node_modules/.bin/tsc --noEmit -p tsconfig.json

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The unit tests alone (no processes, no browser): the quick loop while editing. Bytecode is
# written even where the environment says not to: pytest then keeps its rewritten test modules
# between runs (a third of a run's time is rewriting them).
unit: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE MESHTRACE_QUICK_FUZZ=1 $(BIN)/pytest -q -m unit -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
