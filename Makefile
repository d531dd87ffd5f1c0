# The README's two commands are `make run` and `make test`.
GO ?= go

.PHONY: run test build vet fmt bench bench-quick fuzz

## run: everything in one process (costd): embedded NATS, Redis child, simulated clusters, aggregator, API.
run:
	$(GO) run ./cmd/costd

## test: vet, then every test with the race detector, against real NATS and Redis.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

build:
	$(GO) build -o bin/ ./cmd/...

fmt:
	gofmt -l -w .
