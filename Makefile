# Sentinel: `make run` starts the whole stack on embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint format services bench clean

$(STAMP): requirements.txt requirements-local.txt requirements-embeddings.txt requirements-dev.txt requirements-otel.txt requirements-nodeps.txt scripts/install-system-packages.sh scripts/install-llama.sh
	bash scripts/install-system-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	bash scripts/install-llama.sh $(BIN)/python
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install --quiet --progress-bar off \
		-r requirements.txt -r requirements-local.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --progress-bar off --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/python -m sentinel_site.stack run

test: setup
	$(BIN)/python -m sentinel_site.stack test $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: setup
	bash scripts/install-system-packages.sh --bench
	$(BIN)/python -m sentinel_site.stack bench $(BENCH_ARGS)

services: setup
	$(BIN)/python -m sentinel_site.stack env

clean:
	rm -rf $(VENV) var
