// Package filewatch keeps a value parsed from a file current while the
// process runs: the token file, the rules file, and next the allocation
// policy file. A Kubernetes Secret or ConfigMap mounted as a file is
// updated in place, so the file is polled and its content compared (not
// its modification time, whose resolution could hide a change). A broken
// edit keeps the previous value in force and is logged once per streak.
package filewatch

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"
)

// DefaultPoll is how often a file is checked for changes.
const DefaultPoll = 2 * time.Second

// Parse turns a file's content into its value. Other files it needs (the
// rules' secret files) it reads through read, so that a change to any of
// them is a change of the value too.
type Parse[T any] func(data []byte, read func(path string) ([]byte, error)) (T, error)

// Config says which file to watch and how to tell about it.
type Config[T any] struct {
	// What names the file in messages ("token file", "rules file").
	What string
	Path string
	// Poll is how often Run looks for changes (0: DefaultPoll).
	Poll  time.Duration
	Parse Parse[T]
	// Reloaded is called by Run after a changed file was taken into force
	// (or one that was failing was fixed), to log what is now in force.
	Reloaded func(ctx context.Context, log *slog.Logger, v T)
}

// Watcher holds the value of the file in force.
type Watcher[T any] struct {
	cfg Config[T]
	log *slog.Logger

	mu     sync.RWMutex
	val    T
	loaded bool
	digest [sha256.Size]byte
	err    error         // of the last reload
	change chan struct{} // closed when val is replaced, then renewed
}

// New loads the file once; a missing or invalid file is an error.
func New[T any](cfg Config[T], log *slog.Logger) (*Watcher[T], error) {
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	w := &Watcher[T]{cfg: cfg, log: log, change: make(chan struct{})}
	if _, err := w.reload(); err != nil {
		return nil, err
	}
	return w, nil
}

// Static holds a fixed value and watches no file (tests, embedding).
func Static[T any](v T) *Watcher[T] {
	return &Watcher[T]{val: v, loaded: true, change: make(chan struct{})}
}

// Current returns the value in force.
func (w *Watcher[T]) Current() T {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.val
}

// Err is the problem of the last reload, nil when the value in force is
// the file on disk.
func (w *Watcher[T]) Err() error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.err
}

// Changed returns a channel that is closed the next time the value in
// force changes. Take it before using the value, so that no change falls
// in between.
func (w *Watcher[T]) Changed() <-chan struct{} {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.change
}

// reload reads the file (and the files Parse reads) and swaps the value
// in when any content changed and parses.
func (w *Watcher[T]) reload() (bool, error) {
	changed, err := w.load()
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
	return changed, err
}

func (w *Watcher[T]) load() (bool, error) {
	data, err := os.ReadFile(w.cfg.Path)
	if err != nil {
		return false, fmt.Errorf("read %s %s: %w", w.cfg.What, w.cfg.Path, err)
	}
	h := sha256.New()
	h.Write(data)
	read := func(p string) ([]byte, error) {
		b, err := os.ReadFile(p)
		h.Write([]byte(strconv.Itoa(len(b)) + ":"))
		h.Write(b)
		return b, err
	}
	v, err := w.cfg.Parse(data, read)
	var digest [sha256.Size]byte
	copy(digest[:], h.Sum(nil))
	w.mu.RLock()
	same := w.loaded && digest == w.digest
	w.mu.RUnlock()
	if same {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", w.cfg.What, w.cfg.Path, err)
	}
	w.mu.Lock()
	w.val, w.digest, w.loaded = v, digest, true
	close(w.change)
	w.change = make(chan struct{})
	w.mu.Unlock()
	return true, nil
}

// Run polls the file until ctx ends; it returns nil then. A Static
// watcher only waits.
func (w *Watcher[T]) Run(ctx context.Context) error {
	if w.cfg.Path == "" {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(w.cfg.Poll)
	defer tick.Stop()
	var failing bool
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		changed, err := w.reload()
		switch {
		case err != nil && !failing:
			// Once per failure streak: the previous value stays in force.
			w.log.ErrorContext(ctx, w.cfg.What+" not reloaded; keeping the previous one in force", "path", w.cfg.Path, "err", err)
			failing = true
		case err == nil && (changed || failing):
			if w.cfg.Reloaded != nil {
				w.cfg.Reloaded(ctx, w.log, w.Current())
			}
			failing = false
		}
	}
}
