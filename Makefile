# radiusd: `make run` serves config/radiusd.toml on SQLite; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/radiusd.toml
STAMP := $(VENV)/.installed

RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test bench clean openapi

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# `make run` needs no test extras (and SQLite no psycopg).
$(RUN_STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/radiusd-admin --config $(CONFIG) db upgrade
	$(BIN)/radiusd-admin --config $(CONFIG) api-client ensure-admin
	@echo "Web console: create the first operator with"
	@echo "  $(BIN)/radiusd-admin --config $(CONFIG) operator add NAME --role admin"
	@echo "then open http://127.0.0.1:8080/console/"
	exec $(BIN)/radiusd --config $(CONFIG) serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# BENCH_PARTS picks the parts (e.g. `make bench BENCH_PARTS=overload OVERLOAD_ARGS="--overload-duration 5"`).
BENCH_PARTS ?= throughput overload import

bench: $(STAMP)
	$(if $(filter throughput,$(BENCH_PARTS)),$(BIN)/python bench/run.py $(BENCH_ARGS))
	$(if $(filter overload,$(BENCH_PARTS)),$(BIN)/python bench/overload.py $(OVERLOAD_ARGS))
	$(if $(filter import,$(BENCH_PARTS)),$(BIN)/python bench/import_bench.py $(IMPORT_BENCH_ARGS))

# The server reads the OpenAPI document as JSON; openapi.yaml is what people edit.
openapi: $(STAMP)
	$(BIN)/python -c 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), open(sys.argv[2], "w"), indent=1, ensure_ascii=False)' admin_api/openapi.yaml admin_api/openapi.json

clean:
	rm -rf $(VENV) var *.egg-info
