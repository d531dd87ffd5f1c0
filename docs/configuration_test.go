package docs_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// commands returns the binaries under cmd/, whose flags the table lists: a
// new binary is checked as soon as its folder exists.
func commands(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("..", "cmd"))
	if err != nil {
		t.Fatalf("list the binaries: %v", err)
	}
	var bins []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join("..", "cmd", e.Name(), "main.go")); e.IsDir() && err == nil {
			bins = append(bins, e.Name())
		}
	}
	if len(bins) == 0 {
		t.Fatal("no binaries under cmd/ (a folder with a main.go)")
	}
	return bins
}

// flagsTableHeader is the header line of the one flags table.
const flagsTableHeader = "| flag | env | default | binaries | meaning |"

// docFlag is one row of the flags table.
type docFlag struct {
	line     int
	name     string   // without the dashes
	env      string   // "" when the flag has no variable
	def      string   // "" when the default is the zero value
	binaries []string // binaries that have the flag with this env and default
}

// helpFlag is one flag as a binary's -h prints it.
type helpFlag struct {
	env, def string
}

// TestConfigurationFlagsTable holds docs/configuration.md's flags table to
// the binaries: every flag a binary's -h prints is in the table for that
// binary, with the same environment variable and default, and every flag
// the table lists for a binary exists there. Every binary under cmd/ is
// checked, so a new one cannot ship without its rows. They are built as
// they ship (go build) and asked with an empty environment, so that no
// variable of the machine running the test changes a default.
func TestConfigurationFlagsTable(t *testing.T) {
	binaries := commands(t)
	rows := readFlagsTable(t, "configuration.md")
	dir := buildBinaries(t, binaries)

	var problems []string
	listed := map[string]map[string][]docFlag{} // binary -> flag -> rows
	for _, r := range rows {
		for _, b := range r.binaries {
			if !slices.Contains(binaries, b) {
				problems = append(problems, fmt.Sprintf("configuration.md:%d: --%s: unknown binary %q (one of %s)", r.line, r.name, b, strings.Join(binaries, ", ")))
				continue
			}
			if listed[b] == nil {
				listed[b] = map[string][]docFlag{}
			}
			listed[b][r.name] = append(listed[b][r.name], r)
		}
	}
	for _, b := range binaries {
		help := helpFlags(t, filepath.Join(dir, b))
		for _, name := range sortedKeys(help) {
			h := help[name]
			rs := listed[b][name]
			switch {
			case len(rs) == 0:
				problems = append(problems, fmt.Sprintf("%s: --%s (env %s, default %s) is not in the table; add a row: %s",
					b, name, orNone(h.env), orNone(h.def), suggestRow(b, name, h)))
			case len(rs) > 1:
				problems = append(problems, fmt.Sprintf("%s: --%s is listed %d times for it (lines %s)", b, name, len(rs), lines(rs)))
			default:
				r := rs[0]
				if r.env != h.env {
					problems = append(problems, fmt.Sprintf("configuration.md:%d: %s: --%s: the table says env %s, -h says %s", r.line, b, name, orNone(r.env), orNone(h.env)))
				}
				if r.def != h.def {
					problems = append(problems, fmt.Sprintf("configuration.md:%d: %s: --%s: the table says default %s, -h says %s", r.line, b, name, orNone(r.def), orNone(h.def)))
				}
			}
		}
		for _, name := range sortedKeys(listed[b]) {
			if _, ok := help[name]; !ok {
				problems = append(problems, fmt.Sprintf("configuration.md:%s: --%s is listed for %s, whose -h has no such flag", lines(listed[b][name]), name, b))
			}
		}
	}
	if len(problems) > 0 {
		t.Errorf("docs/configuration.md's flags table disagrees with the binaries' -h (%d problems):\n%s", len(problems), strings.Join(problems, "\n"))
	}
}

// buildBinaries builds every binary into a temporary directory as it
// ships (go build, as make build does). In make test, go vet has already
// compiled every package they import, so only the mains and the links
// remain.
func buildBinaries(t *testing.T, binaries []string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH (go test puts GOROOT/bin there; run the test with go test): %v", err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, b := range binaries {
		args = append(args, "./cmd/"+b)
	}
	ctx := t.Context()
	if deadline, ok := t.Deadline(); ok {
		// Leave time to say what took too long instead of a timeout panic.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-30*time.Second))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Dir = ".." // the module root
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("go %s did not finish before the test's deadline (%s; a cold build cache on a busy machine: run go build ./cmd/... first, or a longer -timeout)", strings.Join(args, " "), time.Since(start).Round(time.Second))
	}
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

// helpLine is a flag's first line in the flag package's -h output:
// "  -name type", "  -name" (a bool), or "  -x\tusage" (a one-letter name
// without a type).
var helpLine = regexp.MustCompile(`^  -(\S+)(?: (\S+))?(?:\t(.*))?$`)

var (
	defaultSuffix = regexp.MustCompile(` \(default (.*)\)$`)
	envSuffix     = regexp.MustCompile(` \(env ([A-Z0-9_]+)\)$`)
)

// helpFlags runs bin -h in an empty environment and reads its flags.
func helpFlags(t *testing.T, bin string) map[string]helpFlag {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-h")
	cmd.Env = []string{"HOME=" + t.TempDir()}
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s -h did not exit within a minute: %v", bin, ctx.Err())
	}
	_ = err // -h exits 0 or 2 depending on the binary; the output is what counts

	usage := map[string]string{}
	var order []string
	var cur string
	for l := range strings.SplitSeq(string(out), "\n") {
		if m := helpLine.FindStringSubmatch(l); m != nil {
			cur = m[1]
			order = append(order, cur)
			usage[cur] = m[3]
			continue
		}
		if rest, ok := strings.CutPrefix(l, "    \t"); ok && cur != "" {
			if usage[cur] != "" {
				usage[cur] += " "
			}
			usage[cur] += rest
		}
	}
	if len(order) == 0 {
		t.Fatalf("%s -h printed no flags the test can read:\n%s", bin, out)
	}
	flags := map[string]helpFlag{}
	for _, name := range order {
		u := usage[name]
		var h helpFlag
		if m := defaultSuffix.FindStringSubmatchIndex(u); m != nil {
			h.def = u[m[2]:m[3]]
			u = u[:m[0]]
			if strings.HasPrefix(h.def, `"`) {
				d, err := strconv.Unquote(h.def)
				if err != nil {
					t.Fatalf("%s -h: --%s: default %s: %v", bin, name, h.def, err)
				}
				h.def = d
			}
		}
		if m := envSuffix.FindStringSubmatch(u); m != nil {
			h.env = m[1]
		}
		flags[name] = h
	}
	return flags
}

// readFlagsTable reads the rows of the table under flagsTableHeader.
func readFlagsTable(t *testing.T, path string) []docFlag {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open the configuration reference: %v", err)
	}
	defer f.Close()
	var rows []docFlag
	var problems []string
	in, seen := false, false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if l == flagsTableHeader {
			if seen {
				problems = append(problems, fmt.Sprintf("%s:%d: a second flags table; keep one", path, n))
			}
			in, seen = true, true
			continue
		}
		if !in {
			continue
		}
		if !strings.HasPrefix(l, "|") {
			in = false
			continue
		}
		if strings.HasPrefix(l, "| ---") || strings.HasPrefix(l, "|---") {
			continue
		}
		r, err := parseRow(l)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s:%d: %v", path, n, err))
			continue
		}
		r.line = n
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if !seen {
		t.Fatalf("%s has no flags table (a line %q)", path, flagsTableHeader)
	}
	if len(problems) > 0 {
		t.Fatalf("%s's flags table cannot be read:\n%s", path, strings.Join(problems, "\n"))
	}
	return rows
}

var (
	codeSpan = regexp.MustCompile("`([^`]*)`")
	flagCell = regexp.MustCompile("^`--([a-z0-9][a-z0-9-]*)`$")
)

// parseRow reads "| `--name` | `ENV` | `default` notes | bins | meaning |".
// An env or default cell without a code span means none.
func parseRow(l string) (docFlag, error) {
	cells := splitCells(l)
	if len(cells) != 5 {
		return docFlag{}, fmt.Errorf("%d cells, want 5 (flag, env, default, binaries, meaning)", len(cells))
	}
	var r docFlag
	m := flagCell.FindStringSubmatch(cells[0])
	if m == nil {
		return docFlag{}, fmt.Errorf("flag cell %q: want exactly one `--name`", cells[0])
	}
	r.name = m[1]
	if m := codeSpan.FindStringSubmatch(cells[1]); m != nil {
		r.env = m[1]
	}
	if m := codeSpan.FindStringSubmatch(cells[2]); m != nil {
		r.def = m[1]
	}
	for b := range strings.SplitSeq(cells[3], ",") {
		r.binaries = append(r.binaries, strings.TrimSpace(b))
	}
	return r, nil
}

// splitCells splits a table row at the pipes that are not escaped (\|).
func splitCells(l string) []string {
	l = strings.TrimSpace(l)
	l = strings.TrimPrefix(l, "|")
	l = strings.TrimSuffix(l, "|")
	var cells []string
	var b strings.Builder
	for i := 0; i < len(l); i++ {
		switch {
		case l[i] == '\\' && i+1 < len(l) && l[i+1] == '|':
			b.WriteString(`\|`)
			i++
		case l[i] == '|':
			cells = append(cells, strings.TrimSpace(b.String()))
			b.Reset()
		default:
			b.WriteByte(l[i])
		}
	}
	return append(cells, strings.TrimSpace(b.String()))
}

func suggestRow(bin, name string, h helpFlag) string {
	env, def := "—", "—"
	if h.env != "" {
		env = "`" + h.env + "`"
	}
	if h.def != "" {
		def = "`" + h.def + "`"
	}
	return fmt.Sprintf("| `--%s` | %s | %s | %s | … |", name, env, def, bin)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return strconv.Quote(s)
}

func lines(rs []docFlag) string {
	var s []string
	for _, r := range rs {
		s = append(s, strconv.Itoa(r.line))
	}
	return strings.Join(s, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
