package glob_test

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/alauda/costmeter/internal/glob"
)

func mustCompile(t *testing.T, s string) glob.Pattern {
	t.Helper()
	p, err := glob.Compile(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// re is the test's own model of a glob: a regular expression.
func re(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, c := range p {
		switch c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"gpu-*", "gpu-a100", true},
		{"gpu-*", "gpu-", true},
		{"gpu-*", "cpu-a", false},
		{"*-eu-*", "prod-eu-1", true},
		{"*-eu-*", "prod-us-1", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*", "", true},
		{"kube-system", "kube-system", true},
		{"kube-system", "kube-systems", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
	} {
		if got := mustCompile(t, tc.pattern).Match(tc.name); got != tc.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

// TestRandom checks Match against regular expressions and Overlaps against
// a search over every short name of the alphabet.
func TestRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const alphabet = "ab*?"
	pat := func() string {
		n := r.IntN(5)
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		if n == 0 {
			return "*"
		}
		return string(b)
	}
	var names []string
	var gen func(prefix string)
	gen = func(prefix string) {
		names = append(names, prefix)
		if len(prefix) < 7 {
			gen(prefix + "a")
			gen(prefix + "b")
			gen(prefix + "c")
		}
	}
	gen("")
	overlaps := 0
	for range 400 {
		ps, qs := pat(), pat()
		p, q := mustCompile(t, ps), mustCompile(t, qs)
		rp, rq := re(ps), re(qs)
		want := false
		for _, n := range names {
			if got := p.Match(n); got != rp.MatchString(n) {
				t.Fatalf("%q.Match(%q) = %v, regexp says %v", ps, n, got, !got)
			}
			if rp.MatchString(n) && rq.MatchString(n) {
				want = true
			}
		}
		if got := p.Overlaps(q); got != want || q.Overlaps(p) != want {
			t.Fatalf("%q.Overlaps(%q) = %v, a search of names says %v", ps, qs, got, want)
		}
		if want {
			overlaps++
		}
	}
	if overlaps == 0 || overlaps == 400 {
		t.Fatalf("%d of 400 pairs overlap: the test proves nothing", overlaps)
	}
}

func TestLiterals(t *testing.T) {
	for p, want := range map[string]int{"gpu-*": 4, "*-eu-*": 4, "*": 0, "a?c": 2, "exact": 5} {
		if got := mustCompile(t, p).Literals(); got != want {
			t.Errorf("%q.Literals() = %d, want %d", p, got, want)
		}
	}
	if _, err := glob.Compile("", nil); err == nil {
		t.Error("empty pattern accepted")
	}
}
