# Two commands set everything up from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GEN_DIR := src/campaign/v1
GENERATED := $(GEN_DIR)/.generated
NODE_DEPS := node_modules/.installed
# The last released campaign.v1 contract: `make lint` fails on a change that would break it.
CONTRACT := contract/campaign-v1.binpb

LISTEN ?= 127.0.0.1:50051
DATABASE_URL ?= sqlite:///campaigns.db

.PHONY: install proto run test lint format bench bench-abuse clean contract-release

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

# The Node.js client test and the buf curl test need the Node.js dependencies.
test: install $(NODE_DEPS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(NODE_DEPS): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

lint: install $(NODE_DEPS)
	npx --no-install buf lint
	npx --no-install buf breaking --against $(CONTRACT)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# Only at a release, on purpose: the current contract becomes the one not to break.
contract-release: $(NODE_DEPS)
	npx --no-install buf lint
	npx --no-install buf build --exclude-source-info -o $(CONTRACT)

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) $(GEN_DIR) node_modules

# Quick by default; BENCH_MODE=full for longer runs and the 1,000,000-campaign scale run.
bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/abuse.py

# Hostile peers against this server and a bare grpc.aio server, side by side.
bench-abuse: install
	$(BIN)/python bench/abuse.py
