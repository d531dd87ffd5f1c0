package docs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// mdLink is a Markdown link or image target: ](target) or ](target "title").
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// htmlSrc is an <img src="…"> target.
	htmlSrc = regexp.MustCompile(`src="([^"]+)"`)
	// inlineCode is removed before links are looked for: `](x)` in code is not a link.
	inlineCode = regexp.MustCompile("`[^`]*`")
)

// TestLinks checks every relative link of the README and of docs/*.md: the
// file it names exists, and a #fragment into a Markdown file names one of
// its headings (GitHub's anchors). Moving a section without its links
// fails here instead of leaving a newcomer at a dead end.
func TestLinks(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join("..", "README.md"), filepath.Join("..", "deploy", "README.md"))
	var problems []string
	anchors := map[string]map[string]bool{}
	for _, f := range files {
		for _, l := range links(t, f) {
			target, frag, _ := strings.Cut(l.target, "#")
			if strings.Contains(target, "://") || strings.HasPrefix(l.target, "mailto:") {
				continue
			}
			path := f
			if target != "" {
				path = filepath.Join(filepath.Dir(f), filepath.FromSlash(target))
				if _, err := os.Stat(path); err != nil {
					problems = append(problems, fmt.Sprintf("%s:%d: %s: no such file", f, l.line, l.target))
					continue
				}
			}
			if frag == "" || !strings.HasSuffix(path, ".md") {
				continue
			}
			a, ok := anchors[path]
			if !ok {
				a = headingAnchors(t, path)
				anchors[path] = a
			}
			if !a[frag] {
				problems = append(problems, fmt.Sprintf("%s:%d: %s: %s has no heading with anchor #%s", f, l.line, l.target, path, frag))
			}
		}
	}
	if len(problems) > 0 {
		t.Errorf("broken links (%d):\n%s", len(problems), strings.Join(problems, "\n"))
	}
}

type link struct {
	line   int
	target string
}

// links returns the link targets of a Markdown file outside code blocks.
func links(t *testing.T, path string) []link {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var out []link
	fenced := false
	for i, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		l = inlineCode.ReplaceAllString(l, "")
		for _, m := range mdLink.FindAllStringSubmatch(l, -1) {
			out = append(out, link{i + 1, m[1]})
		}
		for _, m := range htmlSrc.FindAllStringSubmatch(l, -1) {
			out = append(out, link{i + 1, m[1]})
		}
	}
	return out
}

// anchorDrop is what GitHub leaves out of a heading's anchor.
var anchorDrop = regexp.MustCompile(`[^\p{L}\p{N} _-]`)

// headingAnchors returns the anchors GitHub gives a file's headings:
// lowercase, punctuation dropped, spaces as hyphens, and -1, -2, … on
// repeats.
func headingAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	anchors := map[string]bool{}
	count := map[string]int{}
	fenced := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fenced = !fenced
			continue
		}
		if fenced || !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(l, "#"))
		a := strings.ReplaceAll(anchorDrop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")
		if n := count[a]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			anchors[a] = true
		}
		count[a]++
	}
	return anchors
}

// TestReadmeIndexesEveryDoc checks that the README's reference links every
// file of docs/: a topic nobody can find from the entry is lost.
func TestReadmeIndexesEveryDoc(t *testing.T) {
	readme := filepath.Join("..", "README.md")
	linked := map[string]bool{}
	for _, l := range links(t, readme) {
		target, _, _ := strings.Cut(l.target, "#")
		linked[filepath.Clean(target)] = true
	}
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !linked[filepath.Join("docs", f)] {
			t.Errorf("docs/%s is not linked from README.md: add it to the README's reference table", f)
		}
	}
}

// sourcePath is a repository file named in backticks: `internal/rollup/keys.go`.
var sourcePath = regexp.MustCompile("`((?:internal|api|collector|notifier|aggregator|faults|console|bench|deploy|cmd|test)/[A-Za-z0-9_./-]*\\.(?:go|js|lua|yaml|conf|sh))`")

// TestNamedFilesExist checks that every source file the README and the
// docs name in backticks exists, so that a file moved or renamed in a
// refactoring does not leave a reader looking for it.
func TestNamedFilesExist(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join("..", "README.md"), filepath.Join("..", "deploy", "README.md"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		for i, l := range strings.Split(string(b), "\n") {
			for _, m := range sourcePath.FindAllStringSubmatch(l, -1) {
				p := filepath.FromSlash(m[1])
				if _, err := os.Stat(filepath.Join("..", p)); err == nil {
					continue
				}
				if _, err := os.Stat(filepath.Join(filepath.Dir(f), p)); err == nil {
					continue // relative to the file, as deploy/README.md names its own
				}
				t.Errorf("%s:%d: names %s, which does not exist", f, i+1, m[1])
			}
		}
	}
}
