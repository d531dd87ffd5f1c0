package allocation_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/alauda/costmeter/internal/allocation"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestWatchReloads: an edit takes effect while running, a broken edit
// keeps the policy in force.
func TestWatchReloads(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := filepath.Join(t.TempDir(), "allocation.yaml")
	// A file written in place can be read truncated (empty: the default
	// policy), which a real edit avoids as a volume update does.
	write := func(s string) { testenv.ReplaceFile(t, path, s) }
	write("idle: own\n")
	if _, err := allocation.Watch(filepath.Join(t.TempDir(), "missing.yaml"), 2, 0, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a missing file was accepted")
	}
	w, err := allocation.Watch(path, 2, 10*time.Millisecond, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if w.Current().Idle() != allocation.IdleOwn {
		t.Fatalf("idle %v", w.Current().Idle())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	write("idle: even\n")
	testenv.Eventually(t, 10*time.Second, "the edit takes effect", func() (bool, string) {
		return w.Current().Idle() == allocation.IdleEven, w.Current().Idle().String()
	})
	write("idle: nobody\n")
	testenv.Eventually(t, 10*time.Second, "the broken edit is reported", func() (bool, string) {
		err := w.Err()
		return err != nil && strings.Contains(err.Error(), `idle: "nobody" is not own, weighted or even`), ""
	})
	if w.Current().Idle() != allocation.IdleEven {
		t.Errorf("a broken edit replaced the policy: idle %v", w.Current().Idle())
	}
}
