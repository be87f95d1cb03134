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

# BENCH_PARTS picks the parts (e.g. `make bench BENCH_PARTS=overload OVERLOAD_ARGS="--overload-duration 5"`).
BENCH_PARTS ?= throughput overload import

bench: $(STAMP)
	$(if $(filter throughput,$(BENCH_PARTS)),$(BIN)/python bench/run.py $(BENCH_ARGS))
	$(if $(filter overload,$(BENCH_PARTS)),$(BIN)/python bench/overload.py $(OVERLOAD_ARGS))
	$(if $(filter import,$(BENCH_PARTS)),$(BIN)/python bench/import_bench.py $(IMPORT_BENCH_ARGS))

clean:
	rm -rf $(VENV) var *.egg-info
