# The two commands of the README: `make demo` and `make test`. Both set up everything
# they need on a fresh machine (virtualenvs under .venv*); PostgreSQL is started by the
# test run itself and stopped at its end.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The plugin and integration tests run twice more: with the lowest versions pytest-neon
# supports (tests/requirements/lowest.txt), and on the newest Python on this machine.
LOWEST := .venv-lowest
NEWEST := .venv-newest
PY_NEWEST ?= $(shell scripts/newest-python)
COMPAT_TESTS := tests/plugin tests/contrib
# Neon's own Node clients (pinned), which the emulator tests drive when Node is installed
NODE_CLIENTS := tests/clients/node
NODE_STAMP := $(NODE_CLIENTS)/node_modules/.installed
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: test demo lint typecheck unit compat compat-lowest compat-newest bench clean node-clients

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) --upgrade pip
	$(BIN)/python -m pip install $(PIP_QUIET) -e '.[all]' --group dev
	touch $(STAMP)

$(LOWEST)/.installed: pyproject.toml tests/requirements/lowest.txt
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	$(LOWEST)/bin/python -m pip install $(PIP_QUIET) -c tests/requirements/lowest.txt \
		-e '.[psycopg,psycopg2,sqlalchemy,django,alembic,fastapi]' pytest-xdist \
		time-machine freezegun
	touch $@

$(NEWEST)/.installed: pyproject.toml
	@test -n "$(PY_NEWEST)" || { echo "make: no python3.12 or newer found:" \
		"install one (e.g. pyenv install 3.13) or set PY_NEWEST=/path/to/python"; exit 1; }
	$(PY_NEWEST) -m venv $(NEWEST)
	$(NEWEST)/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	$(NEWEST)/bin/python -m pip install $(PIP_QUIET) -e '.[all]' pytest-xdist time-machine freezegun
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

$(NODE_STAMP): $(NODE_CLIENTS)/package-lock.json
	cd $(NODE_CLIENTS) && npm ci --no-audit --no-fund --silent
	touch $@

node-clients:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(NODE_STAMP); \
	else echo "make: no npm: the tests that drive Neon's Node clients will be skipped"; fi

unit: $(STAMP) node-clients
	$(BIN)/pytest -n 2 --durations=20 $(PYTEST_ARGS)

compat-lowest: $(LOWEST)/.installed
	$(LOWEST)/bin/python --version
	$(LOWEST)/bin/pytest -n 2 -q $(COMPAT_TESTS) $(PYTEST_ARGS)

compat-newest: $(NEWEST)/.installed
	$(NEWEST)/bin/python --version
	$(NEWEST)/bin/pytest -n 2 -q $(COMPAT_TESTS) $(PYTEST_ARGS)

compat: compat-lowest compat-newest

test: lint typecheck unit compat

# The example service's suite on the embedded default (no Neon account, no running server).
demo: $(STAMP)
	cd example_projects/fastapi_app && env -u DATABASE_URL -u NEON_API_KEY -u NEON_PROJECT_ID \
		../../$(BIN)/pytest -p no:cacheprovider --neon-backend=local

bench: $(STAMP)
	$(BIN)/python -m pip install $(PIP_QUIET) -e '.[all]' --group dev --group bench
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/loop.py
	$(BIN)/python benchmarks/shards.py

clean:
	rm -rf $(VENV) $(LOWEST) $(NEWEST) .pytest_cache .mypy_cache .ruff_cache $(NODE_CLIENTS)/node_modules
