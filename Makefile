# Two entry points, each setting up what it needs in .venv first:
#   make demo   the embedded SQLite demo
#   make test   lint, type check and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup-demo setup-test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup-demo: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[sqlalchemy]'

demo: setup-demo
	$(BIN)/apikeys demo

setup-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup-test
	$(BIN)/mypy

pytest: setup-test
	@status=0; $(BIN)/pytest || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; \
	exit $$status

test: lint typecheck pytest

bench: setup-test
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
