# One image with every binary of cmd/ (collector, aggregator, api, costd),
# static (CGO_ENABLED=0), run as a non-root user. Choose the binary with the
# container's command, e.g. ["/usr/local/bin/aggregator"].
#
#   docker build -t costmeter:dev .

# --- build -----------------------------------------------------------------
FROM golang:1.26-alpine AS build
WORKDIR /src
# Modules first: this layer is cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/...

# --- run -------------------------------------------------------------------
# Alpine rather than distroless: its busybox wget serves the compose
# health checks; nothing else is added. /var/lib/costmeter/spool is the
# collector's spool: a volume mounted there inherits its ownership.
FROM alpine:3.22
RUN apk add --no-cache ca-certificates tzdata \
 && addgroup -S -g 65532 costmeter \
 && adduser -S -D -H -u 65532 -G costmeter costmeter \
 && mkdir -p /var/lib/costmeter/spool \
 && chown -R 65532:65532 /var/lib/costmeter
COPY --from=build /out/ /usr/local/bin/
# Numeric, so Kubernetes can check runAsNonRoot.
USER 65532:65532
WORKDIR /var/lib/costmeter
# api; aggregator and collector probes listen on 9091 and 9090.
EXPOSE 8080 9090 9091
CMD ["/usr/local/bin/api", "--help"]
