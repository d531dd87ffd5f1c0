// Package natsembed runs the real NATS server (nats-server/v2) with
// JetStream inside the calling process, for costd.
package natsembed

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an embedded NATS server.
type Server struct{ srv *server.Server }

// Start runs NATS with JetStream on listen (host:port) and its store in dir.
func Start(listen, dir string) (*Server, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen port %q: %w", portStr, err)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "costd",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("create nats server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats server on %s not ready within 15s (port in use?)", listen)
	}
	return &Server{srv: srv}, nil
}

// URL is the client URL.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Stop shuts the server down and waits.
func (s *Server) Stop() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
