# radiusd: `make run` serves config/radiusd.toml on SQLite; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/radiusd.toml
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/radiusd-admin --config $(CONFIG) db upgrade
	$(BIN)/radiusd-admin --config $(CONFIG) api-client ensure-admin
	exec $(BIN)/radiusd --config $(CONFIG) serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/import_bench.py $(IMPORT_BENCH_ARGS)

clean:
	rm -rf $(VENV) var *.egg-info
