# Two entry points, each setting up what it needs in .venv first:
#   make demo   the embedded SQLite demo
#   make test   lint, type check (mypy, pyright), the docs site and the whole test suite
#   make docs   build the docs site into site/ (strict: a warning fails)
#   make package  build the wheel and sdist, install the wheel in a fresh venv and smoke-test it
#   make mutate   mutation testing of the security-critical modules, checked against mutation/
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup-demo setup-test checks lint typecheck mypy pyright docs package pytest mutate bench bench-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup-demo: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[sqlalchemy]'

demo: setup-demo
	$(BIN)/apikeys demo

# Installed once per change of pyproject.toml (the stamp), not by every target that needs it.
SETUP_TEST := $(VENV)/.setup-test
setup-test: $(SETUP_TEST)
$(SETUP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all,dev,docs]'
	@# Prism (from npm) serves Clerk's OpenAPI spec for the Clerk conformance tests.
	@if command -v npm >/dev/null 2>&1; then sh tests/backends/clerk/prism.sh >/dev/null; \
	else echo "npm not found: the Clerk mock-server (Prism) tests will be skipped"; fi
	touch $@

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy --strict over apikeys, tests and benchmarks (the files listed in [tool.mypy]); pyright.
typecheck: mypy pyright
mypy: setup-test
	$(BIN)/mypy
pyright: setup-test
	$(BIN)/pyright --pythonpath $(BIN)/python

# The docs site (MkDocs, Material theme, API reference from the docstrings); open site/index.html.
docs: setup-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The suite runs on one worker process per core (pytest-xdist), at most TEST_WORKERS;
# each worker starts its own PostgreSQL and Prism on free loopback ports.
TEST_WORKERS ?= 4
pytest: setup-test
	@status=0; $(BIN)/pytest -n auto --maxprocesses $(TEST_WORKERS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; \
	exit $$status

# What a user gets from the index: the wheel (not this checkout) in a fresh venv, run from
# a folder outside the checkout, with the extras the examples need.
SMOKE := build/smoke
package: setup-test
	rm -rf dist $(SMOKE)
	$(BIN)/hatchling build -t wheel -t sdist
	$(PYTHON) -m venv $(SMOKE)/venv
	$(SMOKE)/venv/bin/python -m pip install --quiet "$$(ls dist/apikeys-*.whl)[all,examples]"
	mkdir -p $(SMOKE)/run
	cd $(SMOKE)/run && ../venv/bin/apikeys demo >/dev/null && ../venv/bin/python -m apikeys --version \
	&& ../venv/bin/python -c "import apikeys, apikeys.integrations.fastapi, apikeys.integrations.starlette, \
	apikeys.integrations.flask, apikeys.integrations.django, apikeys.integrations.django.rest_framework, \
	apikeys.backends.sqlalchemy, apikeys.backends.clerk, apikeys.testing, uvicorn, waitress; \
	assert '/venv/' in apikeys.__file__, apikeys.__file__; print('wheel smoke test passed:', apikeys.__version__)"

# The static checks do not depend on one another: side by side, then the suite.
checks: lint mypy pyright docs package
test: setup-test
	$(MAKE) --no-print-directory --output-sync=target -j checks
	$(MAKE) --no-print-directory pytest

# Mutation testing (see "Mutation testing" in README.md; the modules and their tests are listed
# in pyproject.toml): each mutant runs against those of its module's tests that call the code it
# changes, MUTATE_WORKERS at a time. MODULES="apikeys._cache ..." limits a run to some modules.
# A fresh run each time: results cached from an earlier run would not notice a test weakened
# since. mutation/report.py prints the kill rate per module and fails on a survivor not listed
# in mutation/accepted-survivors.txt.
MUTATE_WORKERS ?= 2
MODULES ?=
mutate: setup-test
	rm -rf mutants
	$(BIN)/mutmut run --max-children $(MUTATE_WORKERS) $(foreach module,$(MODULES),'$(module).*')
	$(BIN)/python mutation/report.py $(MODULES)

# Benchmarks run in their own environment (benchmarks/.venv): the peers they are
# compared with are benchmark-only dependencies, never the project's. wrk loads
# the HTTP servers (installed with apt when missing; without it the HTTP part is skipped);
# valgrind's callgrind counts the servers' instructions per request (installed the same way);
# the fleet harness starts its own PostgreSQL and redis-server on loopback (installed the same way;
# without them the arm is skipped and the record says so).
# The harnesses' own tests: run before the benchmarks, not in every `make test`.
# Every harness of one run writes its raw record into one folder, benchmarks/results/<UTC time>/
# (git-ignored); the summary table of docs/benchmarks.md is generated from that folder alone.
bench-test: setup-test
	$(BIN)/pytest benchmarks/tests

bench: BENCH_RUN := benchmarks/results/$(shell date -u +%Y%m%dT%H%M%SZ)
bench: bench-test
	test -x benchmarks/.venv/bin/python || $(PYTHON) -m venv benchmarks/.venv
	benchmarks/.venv/bin/python -m pip install --quiet -r benchmarks/requirements-bench.txt
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || true
	command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind) || true
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server) || true
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql) || true
	benchmarks/.venv/bin/python -m benchmarks --json $(BENCH_RUN)/core.json
	benchmarks/.venv/bin/python -m benchmarks.compare --json $(BENCH_RUN)/compare.json
	benchmarks/.venv/bin/python -m benchmarks.first_validation --json $(BENCH_RUN)/first_validation.json
	benchmarks/.venv/bin/python -m benchmarks.timing --json $(BENCH_RUN)/timing.json
	benchmarks/.venv/bin/python -m benchmarks.abuse --json $(BENCH_RUN)/abuse.json
	benchmarks/.venv/bin/python -m benchmarks.clerk_flood --prism --json $(BENCH_RUN)/clerk_flood.json
	benchmarks/.venv/bin/python -m benchmarks.http_instructions --json $(BENCH_RUN)/instructions.json
	benchmarks/.venv/bin/python -m benchmarks.fleet --json $(BENCH_RUN)/fleet.json
	benchmarks/.venv/bin/python -m benchmarks.meter --json $(BENCH_RUN)/meter.json
	benchmarks/.venv/bin/python -m benchmarks.summary $(BENCH_RUN)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis site dist build mutants
