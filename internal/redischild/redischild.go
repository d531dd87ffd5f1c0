// Package redischild runs redis-server as a child process, for costd's
// try-it-out mode: data and AOF in a directory of the caller's choice,
// stopped (SIGTERM, then SIGKILL) when the caller is done.
package redischild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotInstalled is returned when redis-server is not on PATH.
var ErrNotInstalled = errors.New("redis-server not found in PATH (install it: apt-get install redis-server, or brew install redis; or set REDIS_URL to a running Redis)")

// Child is a running redis-server.
type Child struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// Start runs redis-server on 127.0.0.1:port with its files in dir and AOF
// (appendfsync everysec) on, and waits until it answers. Large keys are
// freed off the main thread when they expire or are overwritten
// (lazyfree-lazy-expire, lazyfree-lazy-server-del): a day index of 100,000
// members freed on the main thread holds Redis for 100 ms and more. args
// are added to the command line (for example cluster settings).
func Start(ctx context.Context, dir string, port int, args ...string) (*Child, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNotInstalled
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create redis dir: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(abs, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open redis log: %w", err)
	}
	c := &Child{addr: "127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{})}
	c.cmd = exec.Command(bin, append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", abs,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
		"--lazyfree-lazy-expire", "yes", "--lazyfree-lazy-server-del", "yes"}, args...)...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Its own process group: Ctrl-C in the terminal reaches costd, which
	// then stops Redis last, after the aggregator finished its batch.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	go func() {
		_ = c.cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	rdb := redis.NewClient(&redis.Options{Addr: c.addr})
	defer rdb.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := rdb.Ping(ctx).Err(); err == nil {
			return c, nil
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("redis-server exited at start; see %s", filepath.Join(abs, "redis.log"))
		case <-ctx.Done():
			c.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("redis-server on %s did not answer within 15s", c.addr)
		}
	}
}

// Renice sets the nice value of the child's main thread (the one that runs
// every command): negative values need CAP_SYS_NICE (root). Benchmarks use
// it to stand for a Redis with a core of its own, as in production.
func (c *Child) Renice(n int) error {
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, c.cmd.Process.Pid, n); err != nil {
		return fmt.Errorf("renice redis-server %d to %d: %w", c.cmd.Process.Pid, n, err)
	}
	return nil
}

// Addr is the child's host:port.
func (c *Child) Addr() string { return c.addr }

// URL is the child's redis:// URL.
func (c *Child) URL() string { return "redis://" + c.addr + "/0" }

// Stop asks redis-server to exit (it flushes the AOF) and waits.
func (c *Child) Stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
