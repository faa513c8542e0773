# The two commands of the README: `make demo` and `make test`. Both set up everything
# they need on a fresh machine (a virtualenv under .venv); PostgreSQL is started by the
# test run itself and stopped at its end.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

test: lint typecheck unit

# The example service's suite on the embedded default (no Neon account, no running server).
demo: $(STAMP)
	cd example_projects/fastapi_app && env -u DATABASE_URL -u NEON_API_KEY -u NEON_PROJECT_ID \
		../../$(BIN)/pytest -p no:cacheprovider --neon-backend=local

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
