# The README's two commands are `make run` and `make test`.
GO ?= go
# bash: `make run` needs its job control (set -m).
SHELL := /bin/bash
# BIN is where `make build` and `make run` put the binaries; COSTD_FLAGS are passed to costd by `make run`.
BIN ?= bin
COSTD_FLAGS ?=
# staticcheck at a pinned version, run through the module proxy: nothing to install by hand.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run test build vet fmt bench bench-quick fuzz console-vendor screenshots k8s-testbin

## run: everything in one process (costd): embedded NATS, Redis child, simulated clusters, aggregator, API.
## costd is built, then run as a job of its own (set -m): the terminal's Ctrl-C reaches costd only, which
## stops cleanly, and make exits with costd's status (0), not "Error 1" or "Interrupt".
run:
	$(GO) build -o $(BIN)/costd ./cmd/costd
	@set -m; $(BIN)/costd $(COSTD_FLAGS); exit $$?

## test: go.mod tidy (go mod tidy -diff), vet, staticcheck, then every test with the race detector, against real NATS and Redis.
test:
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) test -race -count=1 -timeout 30m ./...

## k8s-testbin: builds kube-apiserver, kube-controller-manager and etcd (module test/k8s) once per machine
## into ${XDG_CACHE_HOME:-$HOME/.cache}/costmeter/k8s-testbin/<version> for the tests of the Kubernetes
## source (internal/kubetest). Cold: about 9 minutes and 3.6 GB of Go build cache on 2 cores; then seconds.
k8s-testbin:
	nice -n 10 ./test/k8s/build.sh

build:
	$(GO) build -o $(BIN)/ ./cmd/...

fmt:
	gofmt -l -w .

## bench: one run against fresh servers (embedded NATS, redis-server child): raw limits of JetStream and
## Redis, ingest end to end (steady and catch-up), API queries at 10k and 100k namespaces, memory; prints
## one table, writes bench/results/latest.json and a CPU profile of the catch-up drain. About 13 minutes.
bench:
	$(GO) run ./bench -out bench/results/latest.json -cpuprofile bench/results/catchup-cpu.pprof

## bench-quick: the same at small sizes, under a minute (also run by `make test` through internal/benchrun).
bench-quick:
	BENCH_QUICK=1 $(GO) run ./bench

## fuzz: the sample decoder's fuzz test for a minute (its seed corpus runs in `make test`).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 60s ./internal/sample

## console-vendor: refresh the console's vendored Apache ECharts (console/static/vendor/echarts) from the
## npm package echarts at ECHARTS_VERSION (keep console.EchartsVersion in step), with its LICENSE and NOTICE.
ECHARTS_VERSION ?= 6.1.0
console-vendor:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	(cd "$$tmp" && npm pack --silent echarts@$(ECHARTS_VERSION) >/dev/null && tar xzf echarts-$(ECHARTS_VERSION).tgz); \
	dst=console/static/vendor/echarts; mkdir -p $$dst; \
	cp "$$tmp/package/dist/echarts.min.js" "$$tmp/package/LICENSE" "$$tmp/package/NOTICE" $$dst/; \
	cp "$$tmp/package/licenses/LICENSE-d3" $$dst/ 2>/dev/null || true; \
	echo $(ECHARTS_VERSION) > $$dst/VERSION; echo "vendored echarts $(ECHARTS_VERSION) into $$dst"

## screenshots: regenerate the console's screenshots (docs/console-*.png, 1280x800 and phone width) with the
## browser test against its known data; not part of make test.
screenshots:
	mkdir -p docs
	COSTMETER_SCREENSHOTS=$(CURDIR)/docs $(GO) test -count=1 -run '^TestConsole$$' ./console
