# Deputy — build, run and test. `make run` and `make test` are all a fresh
# clone needs; both install what they lack.
SHELL := /bin/bash
GO ?= go
BIN := bin/deputy
GHZ_VERSION := v0.120.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := redis-server redis-tools nginx libnginx-mod-http-headers-more-filter libnginx-mod-http-js caddy

# Build info: `deputy version`, the deputy_build_info metric, image labels.
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || echo v0.1.0-dev)
# A tree with uncommitted changes is not the commit it names: -dirty, as
# `go build`'s own vcs stamp says (describe --dirty needs a tag).
COMMIT ?= $(shell c=$$(git rev-parse HEAD 2>/dev/null) || c=unknown; [ -z "$$(git status --porcelain 2>/dev/null)" ] || c=$$c-dirty; echo $$c)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
LDFLAGS := -X github.com/deputyhq/deputy/sidecar/buildinfo.version=$(VERSION) -X github.com/deputyhq/deputy/sidecar/buildinfo.commit=$(COMMIT)

# The container image, built without a Docker engine (cmd/deputy-image).
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
IMAGE_REPOSITORY ?= ghcr.io/deputyhq/deputy
IMAGE := bin/deputy-image
CA_CERTS := /etc/ssl/certs/ca-certificates.crt

.PHONY: all build run test test-go test-race test-charts test-image image chart-policies check-chart-policies deps vet lint fmt-check bench fuzz bundle clean

all: build

# How the shipped binary is built, here, in the image and in the Dockerfile:
# static (no libc or ld.so mapped), no symbol table or DWARF, trimmed paths,
# and without gRPC's x/net/trace (grpcnotrace: its init registers debug pages
# rendered by html/template, and an executable template makes the linker keep
# every exported method of every reachable type, ~10 MB of text).
GO_BUILD := CGO_ENABLED=0 $(GO) build -trimpath -tags grpcnotrace -ldflags "-s -w $(LDFLAGS)"

## build: the binary as the image ships it, so `make bench` measures it.
build:
	$(GO_BUILD) -o $(BIN) ./cmd/deputy

## image: the OCI image, as an OCI layout in bin/deputy-image and a
## `docker load` tarball bin/deputy-image.tar (no Docker engine needed).
image:
	@[ -f $(CA_CERTS) ] || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ca-certificates >/dev/null; }
	GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO_BUILD) -o bin/deputy-linux-$(IMAGE_ARCH) ./cmd/deputy
	cd cmd/deputy-image && $(GO) run . -binary ../../bin/deputy-linux-$(IMAGE_ARCH) -policies ../../policies \
		-ca-certs $(CA_CERTS) -version $(VERSION) -revision $(COMMIT) -arch $(IMAGE_ARCH) \
		-repository $(IMAGE_REPOSITORY) -created $(SOURCE_DATE_EPOCH) \
		-oci-layout ../../$(IMAGE) -tarball ../../$(IMAGE).tar
	@echo "image $(IMAGE_REPOSITORY):$(patsubst v%,%,$(VERSION)): $(IMAGE) (OCI layout), $(IMAGE).tar ($$(du -h $(IMAGE).tar | cut -f1))"

## test-image: opens the image `make image` built and runs its binary.
test-image: image
	cd cmd/deputy-image && $(GO) vet ./... && DEPUTY_IMAGE=$(CURDIR)/$(IMAGE) DEPUTY_IMAGE_VERSION=$(VERSION) DEPUTY_IMAGE_REVISION=$(COMMIT) \
		$(GO) test -count=1 -timeout 5m ./...

## run: Deputy on the embedded store, shipped policies, dev mode.
run: build
	$(BIN) serve --dev

## deps: the servers the tests drive for real (Redis, nginx with its
## headers-more and njs modules, Caddy, PHP's built-in server as an
## application). Tests start their own instances on free ports; the
## machine's services are left as they are.
deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	[ -f /usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so ] || missing="$$missing libnginx-mod-http-headers-more-filter"; \
	[ -f /usr/lib/nginx/modules/ngx_http_js_module.so ] || missing="$$missing libnginx-mod-http-js"; \
	command -v caddy >/dev/null || missing="$$missing caddy"; \
	command -v php >/dev/null || missing="$$missing php-cli"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

## test: everything — Go tests (unit, contract on memory and real Redis,
## end-to-end through gRPC, nginx and Caddy), Rego tests, chart tests.
test: deps lint test-go test-race test-charts test-image

vet: fmt-check
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l cmd sidecar examples policies bundles 2>/dev/null); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The end-to-end tests (examples/, charts/deputy/tests) run the real binary.
test-go: build
	PATH="$$PATH:/usr/sbin" DEPUTY_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 20m ./...

# The packages where checks, caches, stores and the decision log run
# concurrently, again under the race detector: their concurrency tests
# (many goroutines at once) prove nothing without it.
RACE_PKGS := ./sidecar/ ./sidecar/authz/ ./sidecar/policy/ ./sidecar/resolve/ ./sidecar/memory/ ./sidecar/redis/ \
	./sidecar/decisionlog/ ./sidecar/delegation/ ./sidecar/identity/ ./sidecar/api/ ./sidecar/envoy/
test-race: build
	PATH="$$PATH:/usr/sbin" DEPUTY_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 20m $(RACE_PKGS)

test-charts: build
	cd charts/deputy/tests && PATH="$$PATH:/usr/sbin" DEPUTY_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 10m ./...

## chart-policies: the chart's copy of the shipped policies (a Helm chart
## cannot hold symlinks); the chart tests fail when it is stale.
chart-policies:
	rm -rf charts/deputy/files/policies && mkdir -p charts/deputy/files/policies
	cd policies && find . \( -name '*.rego' ! -name '*_test.rego' -o -name '*.json' \) -exec cp --parents {} ../charts/deputy/files/policies/ \;

# check-chart-policies fails, in seconds, when the chart's copy is stale.
check-chart-policies:
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	(cd policies && find . \( -name '*.rego' ! -name '*_test.rego' -o -name '*.json' \) -exec cp --parents {} $$tmp/ \;) && \
	diff -r $$tmp charts/deputy/files/policies >/dev/null || { echo "charts/deputy/files/policies is stale: run make chart-policies"; exit 1; }

## lint: Regal on the policies (pinned in .regal/tools.mod), go vet, gofmt.
lint: vet check-chart-policies
	$(GO) tool -modfile=.regal/tools.mod regal lint --format compact policies/

## bundle: a signed policy bundle (dev key generated into bundles/keys/, never committed).
bundle: build
	sh bundles/dev-keys.sh
	$(BIN) bundle build policies/ -o bundles/deputy.tar.gz --key bundles/keys/private.pem
	$(BIN) bundle verify bundles/deputy.tar.gz --public-key bundles/keys/public.pem

## bench: in-process benchmarks, then a loopback load test against a
## do-nothing ext_authz server built in the same run, and, with
## OPA_ENVOY=/path/to/opa-envoy-plugin, against OPA-Envoy on the same policies;
## BENCH_PROFILE=dir writes a CPU profile of each Deputy scenario's last run there;
## BENCH_FLAGS passes flags to cmd/deputy-bench (e.g. -decode-answers).
bench: build deps
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem -count 3 ./sidecar/authz/ ./sidecar/decisionlog/ | tee .bench-inproc.txt
	$(GO) build -o bin/noop-authz ./cmd/noop-authz
	@PATH="$$PATH:$$($(GO) env GOPATH)/bin" command -v ghz >/dev/null || $(GO) install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" $(GO) run ./cmd/deputy-bench -inproc .bench-inproc.txt $(if $(OPA_ENVOY),-opa-envoy $(OPA_ENVOY)) $(if $(BENCH_PROFILE),-profile $(BENCH_PROFILE)) $(BENCH_FLAGS)

## fuzz: a short run of every fuzz target.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzBuildInput$$' -fuzztime 30s ./sidecar/authz/
	$(GO) test -run '^$$' -fuzz '^FuzzParsePath$$' -fuzztime 30s ./sidecar/authz/
	$(GO) test -run '^$$' -fuzz '^FuzzAttributeContextAST$$' -fuzztime 30s ./sidecar/authz/
	$(GO) test -run '^$$' -fuzz '^FuzzEncodeString$$' -fuzztime 30s ./sidecar/decisionlog/
	$(GO) test -run '^$$' -fuzz '^FuzzCheckJSONKeys$$' -fuzztime 30s ./sidecar/authz/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeIIS$$' -fuzztime 30s ./sidecar/paramkey/

clean:
	rm -rf bin .bench-*.txt .bench-profiles
