// Package health serves the liveness and readiness endpoints that map onto
// Kubernetes probes: /healthz answers while the process runs, /readyz only
// while every dependency check passes.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Check reports whether one dependency is usable.
type Check func(ctx context.Context) error

// Server is the probe (and metrics) HTTP server of a binary.
type Server struct {
	addr   string
	checks map[string]Check
	mux    *http.ServeMux
	log    *slog.Logger
}

// NewServer returns a Server on addr with the readiness checks by name.
func NewServer(addr string, checks map[string]Check, log *slog.Logger) *Server {
	s := &Server{addr: addr, checks: checks, mux: http.NewServeMux(), log: log}
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s.mux.HandleFunc("/readyz", s.ready)
	return s
}

// Handle adds a handler, such as /metrics.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler returns the server's handler (for tests and for mounting).
func (s *Server) Handler() http.Handler { return s.mux }

// Ready runs every check and returns the failures, joined.
func (s *Server) Ready(ctx context.Context) error {
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := s.checks[n](cctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if err := s.Ready(r.Context()); err != nil {
		http.Error(w, "not ready: "+strings.ReplaceAll(err.Error(), "\n", "; "), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Run serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.addr, err)
	}
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("serving probes", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve probes: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
