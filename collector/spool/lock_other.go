//go:build !unix

package spool

import (
	"fmt"
	"os"
)

// lockDir only creates the lock file where flock(2) does not exist: one
// collector per spool directory is then the operator's promise.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open spool lock: %w", err)
	}
	return f, nil
}

// syncDir is a no-op where directories cannot be fsynced.
func syncDir(string) error { return nil }
