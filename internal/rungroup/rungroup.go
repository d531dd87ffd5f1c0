// Package rungroup runs a process's long-lived parts together: when one
// returns (error or not) or the parent context ends, all are told to stop,
// and Run waits for every one.
package rungroup

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Group is a set of named actors.
type Group struct {
	names  []string
	actors []func(context.Context) error
}

// Add registers an actor; it must return soon after ctx ends.
func (g *Group) Add(name string, run func(ctx context.Context) error) {
	g.names = append(g.names, name)
	g.actors = append(g.actors, run)
}

// Run starts every actor and returns the joined errors once all returned.
func (g *Group) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, run := range g.actors {
		wg.Add(1)
		go func(name string, run func(context.Context) error) {
			defer wg.Done()
			defer cancel()
			if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
			}
		}(g.names[i], run)
	}
	wg.Wait()
	return errors.Join(errs...)
}
