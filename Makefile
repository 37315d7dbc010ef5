# Two commands set everything up from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GEN_DIR := src/campaign/v1
GENERATED := $(GEN_DIR)/.generated
NODE_DEPS := node_modules/.installed

LISTEN ?= 127.0.0.1:50051
DATABASE_URL ?= sqlite:///campaigns.db

.PHONY: install proto run test lint format bench clean

install: $(INSTALLED) $(GENERATED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Generated code is rebuilt from protos/ and never edited by hand.
$(GENERATED): $(PROTOS) $(INSTALLED)
	rm -rf $(GEN_DIR)
	mkdir -p $(GEN_DIR)
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		--python_out=src --grpc_python_out=src \
		--mypy_out=src --mypy_grpc_out=src \
		$(PROTOS)
	touch $@

proto: $(GENERATED)

run: install
	$(BIN)/campaign-grpc serve --listen $(LISTEN) --database-url $(DATABASE_URL)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(NODE_DEPS): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

lint: install $(NODE_DEPS)
	npx --no-install buf lint
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) $(GEN_DIR) node_modules

# Quick by default; BENCH_MODE=full for longer runs and the 1,000,000-campaign scale run.
bench: install
	$(BIN)/python bench/run.py
