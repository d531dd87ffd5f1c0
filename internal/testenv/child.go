package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// The environment by which ChildCommand tells the re-executed test binary
// which role to play and with which arguments (newline-separated).
const (
	envChildRole = "COSTMETER_TEST_CHILD"
	envChildArgs = "COSTMETER_TEST_CHILD_ARGS"
)

// RunChild is the first call of a TestMain whose tests start children with
// ChildCommand: when this test binary was started as one of roles, it runs
// that role with the child's arguments and exits with its status; else it
// returns and the tests run. A child is a real process, so a test can kill
// it with SIGKILL, stop it with SIGSTOP or signal it as an operator would.
func RunChild(roles map[string]func(args []string) int) {
	role, ok := os.LookupEnv(envChildRole)
	if !ok {
		return
	}
	run, ok := roles[role]
	if !ok {
		os.Stderr.WriteString("testenv: unknown child role " + role + "\n")
		os.Exit(2)
	}
	var args []string
	if a := os.Getenv(envChildArgs); a != "" {
		args = strings.Split(a, "\n")
	}
	os.Exit(run(args))
}

// ChildCommand returns the command that re-executes this test binary as
// role with args (see RunChild), running no test. Its Env is this
// process's environment and the role's; append to it for more.
func ChildCommand(role string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChildRole+"="+role, envChildArgs+"="+strings.Join(args, "\n"))
	return cmd
}

// LockedBuffer collects output written from other goroutines (a logger, a
// child process's pipe copier) while the test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Reset forgets everything written so far.
func (l *LockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}
