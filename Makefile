# Sentinel: `make run` starts the whole stack on embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint format services bench clean

# scripts/install.sh: system packages, the venv, llama.cpp, torch, the requirements, each step
# saying what it does and about how long is left.
$(STAMP): requirements.txt requirements-local.txt requirements-embeddings.txt requirements-dev.txt requirements-otel.txt requirements-nodeps.txt scripts/install-system-packages.sh scripts/install-llama.sh scripts/install.sh scripts/progress.sh
	bash scripts/install.sh $(PYTHON) $(VENV)
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
