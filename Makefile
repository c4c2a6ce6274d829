# rouse — the two commands a new machine needs: `make dev` and `make test`.
NOMAD_VERSION       := 1.11.1
CONSUL_VERSION      := 1.21.0
STATICCHECK_VERSION := 0.8.2
TRAEFIK_VERSION     := 3.7.13
GO                  ?= go
BIN                 := $(CURDIR)/bin
export PATH         := $(BIN):$(PATH)
# The tests' and benchmarks' Nomad clients advertise this as meta.rouse_bin (the guard
# tasks' command); set, it spares every test package a build of its own.
ROUSE_BIN_ENV       := ROUSE_BIN=$(abspath $(BIN))/rouse

.PHONY: all build examples tools docker dev dev-image test test-race vet lint fmt-check fuzz bench-deps bench-gateway bench-load bench-knative bench-chaos bench-scaler bench-scale bench-wake clean

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

## observability-tools: headless Chromium (the console's browser test) and Prometheus with
## promtool (the rules' and the scrape test), from Debian when missing (tools/debian.sh; the
## tests call it too, so `go test` alone works on a fresh machine)
.PHONY: observability-tools
observability-tools:
	@tools/debian.sh chromium prometheus

## test: gofmt, go vet, staticcheck, then every test against real Nomad and Consul agents
test: tools docker observability-tools fmt-check vet lint build
	$(ROUSE_BIN_ENV) $(GO) test -count=1 -timeout 40m ./...

## test-race: every test again under the race detector (about 5 minutes; not in CI's
## `make test`, whose cold-start bounds it would slow)
test-race: tools build
	$(ROUSE_BIN_ENV) $(GO) test -race -count=1 -timeout 60m ./...

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

## bench-deps: load generator and the peer proxies the benchmarks compare against from Debian
## (nginx-light pulls in Debian's nginx, built with http_v2 and grpc, which GRPC=1 needs;
## haproxy 2.6); Traefik, the third peer, is built from the Go module proxy by bench-gateway
bench-deps:
	@command -v wrk >/dev/null && command -v nginx >/dev/null && command -v haproxy >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq wrk nginx-light haproxy; }

## bench-gateway: direct vs rouse gateway vs nginx, HAProxy and Traefik (pinned, built from the
## module proxy into the tools cache on first use: minutes), same backend, one run; TLS=1 over
## https, GRPC=1 for gRPC over h2c (gateway/bench/grpc.sh), both against nginx only
bench-gateway: tools bench-deps build
	@tools/ensure.sh traefik $(TRAEFIK_VERSION)
	$(ROUSE_BIN_ENV) gateway/bench/run.sh

## bench-load: Knative's load-test shape against examples/autoscale, with a plot
bench-load: tools build
	$(ROUSE_BIN_ENV) $(GO) run ./examples/loadtest -out bench-results

## bench-knative: Knative's SLA gates (dataplane-probe, load-test, rollout-probe), each on its own
## platform, scaled where 2 cores cannot offer the rate; CSV + SVG each and the table of gates (~17 min)
bench-knative: tools build
	$(ROUSE_BIN_ENV) $(GO) run ./examples/loadtest -shape knative -out bench-results/knative

## bench-wake: N services at zero (examples/hello, raw_exec) woken by one request each at once, N = 25
## and 100, 3 rounds each, with where each wake's time went (e2e/wake; ROUSE_WAKE_N, ROUSE_WAKE_ROUNDS)
bench-wake: tools build
	$(ROUSE_BIN_ENV) $(GO) test -count=1 -timeout 30m -run '^$$' -bench '^BenchmarkParallelWake$$' -benchtime 1x -v ./e2e/wake/

## bench-chaos: every fault of e2e/faults on a multi-node cluster (3 Nomad servers, 3
## workers, 2 edges with a gateway and a scaler each), at the long scale, with its table,
## then 25 and 100 services woken at once on that cluster
bench-chaos: tools build
	$(ROUSE_BIN_ENV) $(GO) test -count=1 -timeout 40m -run '^$$' -bench '^Benchmark(Chaos|ParallelWake)$$' -benchtime 1x -v ./e2e/faults/

## bench-scaler: KPA decisions for 10 000 revisions per tick
bench-scaler: build
	$(ROUSE_BIN_ENV) $(GO) test -run '^$$' -bench Tick10k -benchtime 50x ./scaler/...

## bench-scale: 1 000 services applied with the CLI, route changes to every gateway at 1 000 and
## 10 000 services (latency, bytes), table build, a real scaler tick; own agents, ~15 min cap
bench-scale: tools build
	$(ROUSE_BIN_ENV) $(GO) test -run '^$$' -bench '^BenchmarkScale$$' -benchtime 1x -timeout 20m ./e2e/scale/

clean:
	rm -rf $(BIN) .dev .dev-registry bench-results
