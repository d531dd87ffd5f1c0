package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

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
	ports := runPorts(t)
	cmd := exec.Command("make", "-s", "-C", filepath.Join("..", ".."), "run", "BIN="+dir, "COSTD_FLAGS="+ports.flags(filepath.Join(dir, "data")))
	cmd.Env = makeEnv()
	apiPort := ports.api
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
	testenv.Eventually(t, 30*time.Second, "costd's ports free", ports.free)
}

// costdPorts are the ports a test's costd listens on.
type costdPorts struct{ api, nats, redis int }

func runPorts(t *testing.T) costdPorts {
	return costdPorts{api: testenv.FreePort(t), nats: testenv.FreePort(t), redis: testenv.FreePort(t)}
}

// flags are COSTD_FLAGS for a small simulation on these ports.
func (p costdPorts) flags(dataDir string) string {
	return strings.Join([]string{
		"--data-dir", dataDir,
		"--nats-listen", "127.0.0.1:" + strconv.Itoa(p.nats),
		"--redis-port", strconv.Itoa(p.redis),
		"--listen", "127.0.0.1:" + strconv.Itoa(p.api),
		"--sim-clusters", "sim-a", "--sim-projects", "1", "--sim-namespaces", "1", "--backfill", "2h",
	}, " ")
}

// free reports the first of the ports something still listens on.
func (p costdPorts) free() (bool, string) {
	for _, port := range []int{p.api, p.nats, p.redis} {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return false, fmt.Sprintf("port %d still taken: %v", port, err)
		}
		l.Close()
	}
	return true, ""
}

// makeEnv is the test's environment without anything that could point
// costd elsewhere or change how make runs.
func makeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REDIS_") && !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "COST") &&
			!strings.HasPrefix(kv, "API_") && !strings.HasPrefix(kv, "SIM_") && !strings.HasPrefix(kv, "MAKEFLAGS=") && !strings.HasPrefix(kv, "MFLAGS=") {
			env = append(env, kv)
		}
	}
	return env
}

// TestMakeRunStopsWithMake: `make run` started without a terminal, as a
// supervisor, timeout or a script does, and stopped by a signal to make's
// process group, by timeout's expiry or by SIGTERM to make: costd stops
// cleanly ("costd stopped"), nothing of it keeps running and its ports
// (API, NATS, the Redis child's) are free. The first run also checks that
// the demo's price list is in force: costs show within 30 s of the API
// answering, each usage times the listed price.
func TestMakeRunStopsWithMake(t *testing.T) {
	if _, err := exec.LookPath("timeout"); err != nil {
		t.Fatal("timeout is not installed: apt-get install coreutils")
	}
	bin := t.TempDir() // shared: make relinks costd only once
	for i, tc := range []struct {
		name    string
		command []string // before make's arguments
		stop    func(pid int) error
	}{
		{"SIGINT to make's process group", nil, func(pid int) error { return syscall.Kill(-pid, syscall.SIGINT) }},
		{"SIGTERM to make's process group", nil, func(pid int) error { return syscall.Kill(-pid, syscall.SIGTERM) }},
		{"SIGHUP to make's process group", nil, func(pid int) error { return syscall.Kill(-pid, syscall.SIGHUP) }},
		// timeout runs make in its own process group and, when its time is
		// up (SIGALRM, sent here instead of waiting a fixed time on a
		// shared machine), sends SIGTERM to make and to that group.
		{"timeout expires", []string{"timeout", "1h"}, func(pid int) error { return syscall.Kill(pid, syscall.SIGALRM) }},
		{"SIGTERM to make", nil, func(pid int) error { return syscall.Kill(pid, syscall.SIGTERM) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ports := runPorts(t)
			args := append(append([]string{}, tc.command...), "make", "-s", "-C", filepath.Join("..", ".."), "run",
				"BIN="+bin, "COSTD_FLAGS="+ports.flags(filepath.Join(t.TempDir(), "data")))
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Env = makeEnv()
			outFile, err := os.Create(filepath.Join(t.TempDir(), "make.out"))
			if err != nil {
				t.Fatal(err)
			}
			defer outFile.Close()
			cmd.Stdout, cmd.Stderr = outFile, outFile
			output := func() string { b, _ := os.ReadFile(outFile.Name()); return string(b) }
			// Its own process group and no terminal, like `setsid make run &`.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			var waitErr error
			go func() { waitErr = cmd.Wait(); close(exited) }()
			costd := filepath.Join(bin, "costd")
			t.Cleanup(func() {
				select {
				case <-exited:
				default:
					_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					<-exited
				}
				// A costd left behind by a failure: SIGTERM, so that it
				// stops its Redis child too, then SIGKILL.
				for _, pid := range processesOf(costd) {
					_ = syscall.Kill(pid, syscall.SIGTERM)
				}
				for end := time.Now().Add(30 * time.Second); len(processesOf(costd)) > 0 && time.Now().Before(end); {
					time.Sleep(100 * time.Millisecond)
				}
				for _, pid := range processesOf(costd) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			// Building costd comes first and takes a while on a busy machine.
			testenv.Eventually(t, 5*time.Minute, "costd's API answers", func() (bool, string) {
				select {
				case <-exited:
					t.Fatalf("make run ended early (%v):\n%s", waitErr, output())
				default:
				}
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", ports.api))
				if err != nil {
					return false, err.Error()
				}
				resp.Body.Close()
				return resp.StatusCode == 200, resp.Status
			})
			if i == 0 {
				checkDemoCosts(t, ports.api)
				checkDemoBill(t, ports.api)
			}
			if n := len(processesOf(costd)); n != 1 {
				t.Fatalf("%d processes run %s, want 1 (the test proves nothing)", n, costd)
			}
			if err := tc.stop(cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				t.Fatalf("make run did not end within 60 s:\n%s", output())
			}
			testenv.Eventually(t, 30*time.Second, "costd gone and its ports free", func() (bool, string) {
				if pids := processesOf(costd); len(pids) > 0 {
					return false, fmt.Sprintf("costd still runs: %v", pids)
				}
				return ports.free()
			})
			if got := output(); !strings.Contains(got, "costd stopped") || strings.Contains(got, "level=ERROR") || strings.Contains(got, `"level":"ERROR"`) {
				t.Fatalf("costd did not stop cleanly (make: %v):\n%s", waitErr, got)
			}
		})
	}
}

// checkDemoCosts: within 30 s of the API answering, today's Cpu Effective
// row of the cluster costs its usage times the price deploy/demo/prices.yaml
// lists (read here on its own).
func checkDemoCosts(t *testing.T, apiPort int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "demo", "prices.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Prices []struct {
			Item, Method string
			Price        float64
		}
	}
	if err := yaml.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	price := -1.0
	for _, p := range list.Prices {
		if p.Item == "Cpu" && p.Method == "Effective" {
			price = p.Price
		}
	}
	if price <= 0 {
		t.Fatalf("the demo's price list has no Cpu Effective price:\n%s", b)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	url := fmt.Sprintf("http://127.0.0.1:%d/platform/cost.alauda.io/v1beta1/costs/usage?start=%s&end=%s&kind=cluster_all&item=Cpu&method=Effective",
		apiPort, today, today)
	testenv.Eventually(t, 30*time.Second, "a costed row for today", func() (bool, string) {
		resp, err := http.Get(url)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var body struct {
			Items []struct {
				Usage float64  `json:"usage"`
				Cost  *float64 `json:"cost"`
			} `json:"items"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return false, err.Error()
		}
		if len(body.Items) != 1 || body.Items[0].Usage <= 0 {
			return false, fmt.Sprintf("status %d, rows %+v", resp.StatusCode, body.Items)
		}
		r := body.Items[0]
		if r.Cost == nil {
			t.Fatalf("the row has no cost: the demo's price list is not in force")
		}
		if want := r.Usage * price; math.Abs(*r.Cost-want) > 1e-9*want {
			t.Fatalf("cost %v, want usage %v × price %v = %v", *r.Cost, r.Usage, price, want)
		}
		return true, ""
	})
}

// checkDemoBill: make run keeps teams and bills with the demo policy:
// this month's bill by team has the simulated team, the __idle__ row
// (capacity is simulated) and an overhead (the policy's control plane),
// and its allocated equals its cluster cost to the cent.
func checkDemoBill(t *testing.T, apiPort int) {
	t.Helper()
	now := time.Now().UTC()
	url := fmt.Sprintf("http://127.0.0.1:%d/platform/cost.alauda.io/v1beta1/costs/allocation?start=%s&end=%s&groupBy=team",
		apiPort, now.Format("2006-01-02")[:8]+"01", now.Format(time.DateOnly))
	testenv.Eventually(t, 60*time.Second, "the demo's bill adds up", func() (bool, string) {
		resp, err := http.Get(url)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var bill struct {
			Items []struct {
				ClusterCost, Allocated float64
				Groups                 []struct {
					Group                          string
					Direct, Shared, Idle, Overhead float64
				}
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&bill); err != nil {
			return false, err.Error()
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			// The API's rate limit (20/s per client) answers a poll every
			// 10 ms: back off as a client should, by its Retry-After.
			time.Sleep(time.Second)
			return false, "429: rate limited"
		}
		if resp.StatusCode != 200 || len(bill.Items) != 1 {
			return false, fmt.Sprintf("status %d, %d buckets", resp.StatusCode, len(bill.Items))
		}
		b := bill.Items[0]
		var idle, overhead float64
		var teams []string
		for _, g := range b.Groups {
			idle += g.Idle
			overhead += g.Overhead
			teams = append(teams, g.Group)
		}
		if math.Round(b.ClusterCost*100) != math.Round(b.Allocated*100) {
			t.Fatalf("cluster cost %v, allocated %v", b.ClusterCost, b.Allocated)
		}
		// The test's one simulated namespace is the payments team's.
		return b.ClusterCost > 0 && idle > 0 && overhead > 0 && slices.Contains(teams, "payments") && slices.Contains(teams, "__idle__"),
			fmt.Sprintf("cluster cost %v, idle %v, overhead %v, groups %v", b.ClusterCost, idle, overhead, teams)
	})
}

// processesOf lists the pids of processes running the executable path.
func processesOf(path string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == path {
			pids = append(pids, pid)
		}
	}
	return pids
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

// TestMakeTestChecks reads what `make test` runs (make -n): first what a
// fresh machine lacks (the Debian packages, the Kubernetes test binaries,
// the Node tools if their lockfile changed since the last install), then
// go.mod must be tidy (go mod tidy -diff fails the run otherwise), vet,
// gofmt, staticcheck at a pinned version, then the tests, in that order.
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
	deps := []string{"./test/debs.sh", "nice -n 10 ./test/k8s/build.sh"}
	want := []string{"go mod tidy -diff", "go vet ./...", "out=$(gofmt -l .)", "go run honnef.co/go/tools/cmd/staticcheck@v", "go test -race"}
	if len(lines) < len(deps)+len(want) {
		t.Fatalf("make test runs %q, want %q, then %q", lines, deps, want)
	}
	for i, w := range deps {
		if lines[i] != w {
			t.Errorf("command %d is %q, want %q", i+1, lines[i], w)
		}
	}
	// The Node tools' install, when it is due, comes between.
	node := lines[len(deps) : len(lines)-len(want)]
	for _, l := range node {
		if !strings.Contains(l, "npm") && l != "touch test/node/node_modules/.package-lock.json" {
			t.Errorf("make test runs %q before the checks, not part of test-deps", l)
		}
	}
	checks := lines[len(lines)-len(want):]
	for i, w := range want {
		if !strings.HasPrefix(checks[i], w) {
			t.Errorf("check %d is %q, want %q…", i+1, checks[i], w)
		}
	}
	if strings.Contains(checks[3], "@latest") {
		t.Errorf("staticcheck is not pinned: %q", checks[3])
	}
}
