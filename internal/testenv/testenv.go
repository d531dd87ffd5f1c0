// Package testenv starts the real servers tests run against: an embedded
// NATS JetStream server and a redis-server child process, each with its own
// temporary directory, both stoppable and restartable mid-test.
package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/redis/go-redis/v9"
)

// NATS is an embedded JetStream server.
type NATS struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

// StartNATS starts JetStream on a free port with its store in a temp dir.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	n := &NATS{t: t, opts: opts}
	n.srv = natstest.RunServer(&n.opts)
	// Keep the port across restarts so clients reconnect to the same URL.
	n.opts.Port = n.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.Stop)
	return n
}

// URL is the client URL.
func (n *NATS) URL() string { return n.srv.ClientURL() }

// Stop shuts the server down (idempotent).
func (n *NATS) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// Restart starts the server again on the same port and store.
func (n *NATS) Restart() {
	n.t.Helper()
	n.Stop()
	opts := n.opts
	n.srv = natstest.RunServer(&opts)
}

// Redis is a redis-server child process.
type Redis struct {
	t    testing.TB
	dir  string
	port int
	args []string
	cmd  *exec.Cmd
}

// RedisOption adjusts the redis-server command line.
type RedisOption func(*Redis)

// WithAOF turns on the append-only file with appendfsync everysec, as in
// production.
func WithAOF() RedisOption {
	return func(r *Redis) { r.args = append(r.args, "--appendonly", "yes", "--appendfsync", "everysec") }
}

// StartRedis starts redis-server on a free port in its own temp directory.
// It fails the test, saying how to install it, when redis-server is absent.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found in PATH: install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)")
	}
	r := &Redis{t: t, dir: t.TempDir(), port: FreePort(t)}
	r.args = []string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir, "--save", "", "--appendonly", "no", "--lazyfree-lazy-expire", "yes", "--lazyfree-lazy-server-del", "yes"}
	for _, o := range opts {
		o(r)
	}
	r.start()
	t.Cleanup(r.Stop)
	return r
}

func (r *Redis) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", r.args...)
	r.cmd.Dir = r.dir
	out, err := os.Create(filepath.Join(r.dir, "redis.log"))
	if err != nil {
		r.t.Fatalf("create redis log: %v", err)
	}
	r.cmd.Stdout, r.cmd.Stderr = out, out
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	for {
		if c.Ping(ctx).Err() == nil {
			return
		}
		select {
		case <-ctx.Done():
			r.t.Fatalf("redis-server on port %d did not answer: %s", r.port, r.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Addr is host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL is a redis:// URL for database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Dir is the server's working directory (where its AOF lives).
func (r *Redis) Dir() string { return r.dir }

// Client returns a client closed at the end of the test.
func (r *Redis) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	r.t.Cleanup(func() { c.Close() })
	return c
}

// Log returns the server's log so far.
func (r *Redis) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	return string(b)
}

// Kill sends SIGKILL and waits for the process to end.
func (r *Redis) Kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// Stop ends the server (idempotent).
func (r *Redis) Stop() { r.Kill() }

// Restart starts the server again on the same port and directory.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Kill()
	r.start()
}

// FreePort returns a TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Eventually polls cond every 10 ms until it holds or the deadline passes,
// then fails the test with msg and the last detail cond returned.
func Eventually(t testing.TB, within time.Duration, msg string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", msg, within, detail)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// AOFFiles lists the append-only files of a Redis 7 directory.
func (r *Redis) AOFFiles() []string {
	matches, _ := filepath.Glob(filepath.Join(r.dir, "appendonlydir", "*.incr.aof"))
	return matches
}

// TruncateAOFTail cuts the last n bytes of the newest incremental AOF,
// as a crash with appendfsync everysec loses them.
func (r *Redis) TruncateAOFTail(n int64) error {
	files := r.AOFFiles()
	if len(files) == 0 {
		return fmt.Errorf("no incremental AOF in %s", r.dir)
	}
	f := files[len(files)-1]
	st, err := os.Stat(f)
	if err != nil {
		return err
	}
	size := st.Size() - n
	if size < 0 {
		size = 0
	}
	return os.Truncate(f, size)
}

// AOFTruncateToCommand cuts the newest incremental AOF right before its
// k-th to last command whose name (upper-case) is cmd, so that command
// and every write after it are lost.
func (r *Redis) AOFTruncateToCommand(cmd string, k int) error {
	files := r.AOFFiles()
	if len(files) == 0 {
		return fmt.Errorf("no incremental AOF in %s", r.dir)
	}
	f := files[len(files)-1]
	fh, err := os.Open(f)
	if err != nil {
		return err
	}
	var offsets []int64
	var off int64
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	var prev []string
	for sc.Scan() {
		line := sc.Text()
		n := int64(len(line) + 1)
		prev = append(prev, line)
		if len(prev) > 3 {
			prev = prev[1:]
		}
		// A command starts with "*N", then "$len", then its name.
		if len(prev) == 3 && strings.HasPrefix(prev[0], "*") && strings.HasPrefix(prev[1], "$") && strings.EqualFold(strings.TrimRight(prev[2], "\r"), cmd) {
			offsets = append(offsets, off-int64(len(prev[0])+1)-int64(len(prev[1])+1))
		}
		off += n
	}
	fh.Close()
	if len(offsets) < k {
		return fmt.Errorf("only %d %s commands in %s", len(offsets), cmd, f)
	}
	return os.Truncate(f, offsets[len(offsets)-k])
}

// ReplaceFile writes content to path the way a Kubernetes Secret or
// ConfigMap volume update does: to a file beside it, then renamed over
// it, so that a watcher never reads a half-written (or truncated) file.
func ReplaceFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
