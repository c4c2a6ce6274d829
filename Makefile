# rouse — the two commands a new machine needs: `make dev` and `make test`.
NOMAD_VERSION       := 1.11.1
CONSUL_VERSION      := 1.21.0
STATICCHECK_VERSION := 0.8.2
GO                  ?= go
BIN                 := $(CURDIR)/bin
export PATH         := $(BIN):$(PATH)

.PHONY: all build examples tools docker dev dev-image test test-race vet lint fmt-check fuzz bench-deps bench-gateway bench-load bench-scaler clean

all: build

## tools: build (or reuse) pinned Nomad, Consul and staticcheck into bin/
tools:
	@tools/ensure.sh consul $(CONSUL_VERSION)
	@tools/ensure.sh nomad $(NOMAD_VERSION)
	@tools/ensure.sh staticcheck $(STATICCHECK_VERSION)

## docker: a Docker engine answering on /var/run/docker.sock and docker-registry (installs
## docker.io and docker-registry from Debian and starts dockerd when missing; instant otherwise)
docker:
	@tools/docker.sh

## build: the rouse binary
build:
	$(GO) build -o $(BIN)/rouse ./cmd/rouse

## dev: the whole platform on this machine with examples/hello deployed (DEV_FLAGS=--tls: HTTPS and HTTP/2 with a dev certificate)
DEV_FLAGS ?=
dev: tools build examples
	$(BIN)/rouse dev $(DEV_FLAGS) -f examples/hello/service.hcl -var bin=$(BIN)

## dev-image: like dev, with examples/hello run as a container image: builds it statically,
## pushes it to a registry in .dev-registry/ and applies examples/hello/image.hcl;
## DEV_ARGS go to `rouse dev` (e.g. DEV_ARGS='--listen 127.0.0.1:18080')
DEV_ARGS ?=
dev-image: docker tools build
	$(GO) build -o $(BIN)/image ./examples/image
	$(BIN)/image dev -rouse $(BIN)/rouse -- $(DEV_ARGS)

## examples: the example apps' binaries, into bin/
examples:
	$(GO) build -o $(BIN)/hello ./examples/hello
	$(GO) build -o $(BIN)/autoscale ./examples/autoscale
	$(GO) build -o $(BIN)/grpc-ping ./examples/grpc
	$(GO) build -o $(BIN)/grpc-ping-client ./examples/grpc/client

## test: gofmt, go vet, staticcheck, then every test against real Nomad and Consul agents
test: tools docker fmt-check vet lint
	$(GO) test -count=1 -timeout 40m ./...

## test-race: every test again under the race detector (about 5 minutes; not in CI's
## `make test`, whose cold-start bounds it would slow)
test-race: tools
	$(GO) test -race -count=1 -timeout 60m ./...

vet:
	$(GO) vet ./...

## lint: go vet and the pinned staticcheck (tools/staticcheck), clean
lint: vet
	@tools/ensure.sh staticcheck $(STATICCHECK_VERSION)
	$(BIN)/staticcheck ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## fuzz: each fuzz target for FUZZTIME (default 60s): the spec parser, the gateway's HTTP/1.1
## rules against net/http, and request pipelines through a real gateway (their seed corpora
## run in `make test`); `make fuzz FUZZTIME=10m` is the long run
FUZZTIME ?= 60s
fuzz: tools
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./jobspec/
	@for t in FuzzParseRequest FuzzParseResponse FuzzChunked; do \
	  echo "fuzz $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) ./gateway/http1/ || exit 1; done
	@# through a real gateway, minimising off: its goroutines make most inputs look new
	@for t in FuzzPipeline FuzzPipelineHostile; do \
	  echo "fuzz $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 0 ./gateway/ || exit 1; done

## bench-deps: load generator and the peer proxy the benchmarks compare against (nginx-light
## pulls in Debian's nginx, built with http_v2 and grpc, which GRPC=1 needs)
bench-deps:
	@command -v wrk >/dev/null && command -v nginx >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq wrk nginx-light; }

## bench-gateway: direct vs rouse gateway vs nginx, same backend, one run; TLS=1 over https,
## GRPC=1 for gRPC over h2c (gateway/bench/grpc.sh; its load generator is built by go)
bench-gateway: tools bench-deps build
	gateway/bench/run.sh

## bench-load: Knative's load-test shape against examples/autoscale, with a plot
bench-load: tools build
	$(GO) run ./examples/loadtest -out bench-results

## bench-scaler: KPA decisions for 10 000 revisions per tick
bench-scaler:
	$(GO) test -run '^$$' -bench Tick10k -benchtime 50x ./scaler/...

clean:
	rm -rf $(BIN) .dev .dev-registry bench-results
