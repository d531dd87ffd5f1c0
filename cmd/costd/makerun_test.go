package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/alauda/costmeter/internal/testenv"
)

// TestMakeRunCtrlCExitsZero runs `make run` on a terminal of its own, as a
// user does, and presses Ctrl-C once the API answers: costd must stop
// cleanly and make exit 0, with no "Error" or "Interrupt" line.
func TestMakeRunCtrlCExitsZero(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is not installed: apt-get install make")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: apt-get install redis-server")
	}
	ptmx, pts := openPTY(t)
	dir := t.TempDir()
	apiPort := testenv.FreePort(t)
	flags := strings.Join([]string{
		"--data-dir", filepath.Join(dir, "data"),
		"--nats-listen", "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		"--redis-port", strconv.Itoa(testenv.FreePort(t)),
		"--listen", "127.0.0.1:" + strconv.Itoa(apiPort),
		"--sim-clusters", "sim-a", "--sim-projects", "1", "--sim-namespaces", "1", "--backfill", "2h",
	}, " ")
	cmd := exec.Command("make", "-s", "-C", filepath.Join("..", ".."), "run", "BIN="+dir, "COSTD_FLAGS="+flags)
	// Nothing of the caller's environment may point costd elsewhere.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REDIS_") && !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "COST") &&
			!strings.HasPrefix(kv, "API_") && !strings.HasPrefix(kv, "SIM_") && !strings.HasPrefix(kv, "MAKEFLAGS=") && !strings.HasPrefix(kv, "MFLAGS=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	var (
		mu  sync.Mutex
		out bytes.Buffer
	)
	drained := make(chan struct{}) // the terminal's last output is read
	go func() {
		defer close(drained)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	output := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	// Building costd comes first and takes a while on a busy machine.
	testenv.Eventually(t, 5*time.Minute, "costd's API answers", func() (bool, string) {
		select {
		case <-exited:
			t.Fatalf("make run ended early (%v):\n%s", waitErr, output())
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", apiPort))
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	if _, err := ptmx.Write([]byte{0x03}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("make run after Ctrl-C: %v, want exit 0:\n%s", waitErr, output())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("make run did not stop within 60 s of Ctrl-C:\n%s", output())
	}
	// What make and costd wrote last may still be in the terminal when
	// make exits: read until the terminal closes (every writer is gone).
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
	}
	got := output()
	if !strings.Contains(got, "costd stopped") || strings.Contains(got, "make: ***") {
		t.Fatalf("output:\n%s", got)
	}
}

// openPTY opens a pseudo-terminal pair: the master (the user's side) and
// the slave (the child's terminal).
func openPTY(t *testing.T) (ptmx, pts *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("name the pseudo-terminal: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the pseudo-terminal's slave: %v", err)
	}
	return m, s
}

// TestMakeTestChecks reads what `make test` runs (make -n): go.mod must be
// tidy (go mod tidy -diff fails the run otherwise), then vet, staticcheck at
// a pinned version, then the tests, in that order.
func TestMakeTestChecks(t *testing.T) {
	out, err := exec.Command("make", "-n", "-s", "-C", filepath.Join("..", ".."), "test").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n test: %v\n%s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(l, "make") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	want := []string{"go mod tidy -diff", "go vet ./...", "go run honnef.co/go/tools/cmd/staticcheck@v", "go test -race"}
	if len(lines) != len(want) {
		t.Fatalf("make test runs %q, want %d commands starting %q", lines, len(want), want)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("command %d is %q, want %q…", i+1, lines[i], w)
		}
	}
	if strings.Contains(lines[2], "@latest") {
		t.Errorf("staticcheck is not pinned: %q", lines[2])
	}
}
