# The README's two commands are `make run` and `make test`.
GO ?= go
# bash: `make run` needs its job control (set -m).
SHELL := /bin/bash
# BIN is where `make build` and `make run` put the binaries; COSTD_FLAGS are passed to costd by `make run`,
# after the demo's settings below, each of which `make run NAME=` turns off: PRICING (the sample price list),
# LABELS (the allocation keys the simulated namespaces carry), ALLOCATION and EXPORT.
BIN ?= bin
COSTD_FLAGS ?=
PRICING ?= deploy/demo/prices.yaml
LABELS ?= team,cost-center
# ALLOCATION is the demo's allocation policy (docs/chargeback.md); `make run ALLOCATION=` runs without one.
ALLOCATION ?= deploy/demo/allocation.yaml
# EXPORT is where `make run` writes the FOCUS export (docs/export.md); `make run EXPORT=` writes none.
EXPORT ?= file://$(CURDIR)/data/export
# staticcheck at a pinned version, run through the module proxy: nothing to install by hand.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run test test-deps test-debs test-node build vet fmt bench bench-quick bench-live fuzz console-vendor screenshots k8s-testbin

## run: everything in one process (costd): embedded NATS, Redis child, simulated clusters, aggregator, API,
## with the sample price list, exporting FOCUS files to data/export. deploy/demo/run.sh runs costd so that it stops with make: on a terminal
## Ctrl-C reaches costd only, which stops cleanly, and make exits 0; a signal to make's process group
## (timeout, a supervisor) or a TERM to make stops costd too, instead of leaving it running.
run:
	$(GO) build -o $(BIN)/costd ./cmd/costd
	@./deploy/demo/run.sh $(BIN)/costd $(if $(PRICING),--pricing $(PRICING)) $(if $(LABELS),--allocation-labels $(LABELS)) $(if $(ALLOCATION),--allocation-file $(ALLOCATION)) $(if $(EXPORT),--export-url $(EXPORT)) $(COSTD_FLAGS)

## test: first what a fresh machine lacks (test-deps), then go.mod tidy (go mod tidy -diff), vet, gofmt,
## staticcheck, and every test with the race detector, against real NATS, Redis, Kubernetes, Chromium, Prometheus.
test: test-deps
	$(GO) mod tidy -diff
	$(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt: not formatted (run make fmt):" $$out >&2; exit 1; fi
	$(GO) run $(STATICCHECK) ./...
	$(GO) test -race -count=1 -timeout 30m ./...

## test-deps: everything the tests drive that a fresh machine lacks, each step a no-op once done:
## the Debian packages (test-debs), the Kubernetes control plane (k8s-testbin), the Node tools (test-node).
test-deps: test-debs k8s-testbin test-node

## test-debs: installs the missing ones of redis-server, redis-tools, chromium and prometheus (apt-get update
## first) when run as root with apt-get; elsewhere stops at once, printing the one command to run.
test-debs:
	@./test/debs.sh

## k8s-testbin: builds kube-apiserver and etcd (module test/k8s) once per machine into
## ${XDG_CACHE_HOME:-$HOME/.cache}/costmeter/k8s-testbin/<version> for the tests of the Kubernetes
## source (internal/kubetest); then seconds. Figures: docs/testing.md.
k8s-testbin:
	nice -n 10 ./test/k8s/build.sh

## test-node: the Node tools in test/node (Redocly CLI, DuckDB), installed exactly as package-lock.json pins
## them, again whenever the lockfile or package.json is newer than the last install.
test-node: test/node/node_modules/.package-lock.json

test/node/node_modules/.package-lock.json: test/node/package-lock.json test/node/package.json
	@command -v npm >/dev/null 2>&1 || { echo "test-node: npm is missing: install Node.js 20.19 or later with npm (Debian: apt-get install nodejs npm), then run make test again" >&2; exit 1; }
	npm ci --prefix test/node --no-audit --no-fund
	@touch $@

build:
	$(GO) build -o $(BIN)/ ./cmd/...

fmt:
	gofmt -l -w .

## bench: one run against fresh servers (embedded NATS, redis-server child): raw limits of JetStream and
## Redis, ingest end to end (steady and catch-up), API queries at 10k and 100k namespaces, the live traffic
## of 100k namespaces across a billing midnight (single Redis and Redis Cluster, 11 minutes each), memory;
## prints one table, writes bench/results/latest.json, a CPU profile of the catch-up drain and the live
## phase's Redis latency reports (bench/results/live-*-redis.txt). About 40 minutes.
bench:
	$(GO) run ./bench -out bench/results/latest.json -cpuprofile bench/results/catchup-cpu.pprof

## bench-live: the live phase alone (docs/performance.md), single Redis and Redis Cluster, about 25 minutes;
## writes bench/results/live.json and bench/results/live-*-redis.txt.
bench-live:
	$(GO) run ./bench -phases live -out bench/results/live.json

## bench-quick: the same at small sizes, about two minutes (the live phase: 5 s minutes; also run by `make test`
## through bench/benchrun: TestQuick, and TestQuickLive beside it).
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
