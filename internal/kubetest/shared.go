package kubetest

import (
	"context"
	"os"
	"sync"
	"testing"
)

// Shared is one Cluster for a whole test package, started by the first
// test that asks for it and stopped by Stop, which the package's TestMain
// calls after m.Run. Its zero value is ready to use.
//
//	var plane kubetest.Shared
//
//	func TestMain(m *testing.M) { code := m.Run(); plane.Stop(); os.Exit(code) }
type Shared struct {
	mu  sync.Mutex
	c   *Cluster
	dir string
	err error
}

// Cluster returns the package's control plane, starting it if needed; it
// fails t if the control plane cannot run (binaries missing: run
// `make k8s-testbin`).
func (s *Shared) Cluster(t testing.TB) *Cluster {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil && s.err == nil {
		s.dir, s.err = os.MkdirTemp("", "kubetest-")
		if s.err == nil {
			s.c, s.err = Start(context.Background(), s.dir)
		}
	}
	if s.err != nil {
		t.Fatalf("start the kubernetes control plane: %v", s.err)
	}
	return s.c
}

// Stop stops the control plane if one was started and removes its files.
func (s *Shared) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		s.c.Stop()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
