// Package glob provides the name patterns of the configuration files (the
// price list's clusters, the allocation policy's clusters and namespaces):
// '*' matches any run of characters (none included), '?' exactly one, and
// every other character itself. Names are DNS labels, so no escaping is
// needed. Besides matching, a pattern reports how specific it is (its
// literal characters) and whether two patterns can match a common name,
// which is what a file needs to refuse an ambiguous "most specific wins".
package glob

import (
	"fmt"
	"strings"
)

// Pattern is a compiled glob.
type Pattern struct {
	src string
}

// Compile checks a pattern: it must not be empty and may only hold
// characters a name can hold (check, called on the pattern with its '*' and
// '?' replaced by a letter, is the name rule) plus '*' and '?'.
func Compile(s string, check func(string) error) (Pattern, error) {
	if s == "" {
		return Pattern{}, fmt.Errorf("empty pattern")
	}
	if check != nil {
		if err := check(strings.NewReplacer("*", "a", "?", "a").Replace(s)); err != nil {
			return Pattern{}, err
		}
	}
	return Pattern{src: s}, nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.src }

// IsLiteral reports whether the pattern holds no wildcard: it matches one
// name only, itself.
func (p Pattern) IsLiteral() bool { return !strings.ContainsAny(p.src, "*?") }

// Literals is the number of characters that match only themselves: the
// pattern's specificity among globs (gpu-* has 4, *-eu-* has 4, * has 0).
func (p Pattern) Literals() int {
	return len(p.src) - strings.Count(p.src, "*") - strings.Count(p.src, "?")
}

// Match reports whether name matches the whole pattern.
func (p Pattern) Match(name string) bool { return match(p.src, name) }

// match is the classic backtracking glob match: linear in practice, at most
// len(p)×len(s) steps, since only the last star is ever retried.
func match(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			mark++
			pi, si = star+1, mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// Overlaps reports whether some name matches both p and q. It explores the
// pairs of positions the two patterns can reach on a common string, a
// (len(p)+1)×(len(q)+1) table.
func (p Pattern) Overlaps(q Pattern) bool {
	a, b := p.src, q.src
	seen := make([]bool, (len(a)+1)*(len(b)+1))
	var reach func(i, j int) bool
	reach = func(i, j int) bool {
		k := i*(len(b)+1) + j
		if seen[k] {
			return false
		}
		seen[k] = true
		if i == len(a) && j == len(b) {
			return true
		}
		// A star may match nothing.
		if i < len(a) && a[i] == '*' && reach(i+1, j) {
			return true
		}
		if j < len(b) && b[j] == '*' && reach(i, j+1) {
			return true
		}
		if i == len(a) || j == len(b) {
			return false
		}
		// Both consume one common character; a star stays where it is.
		ca, cb := a[i], b[j]
		if ca != '*' && cb != '*' && ca != '?' && cb != '?' && ca != cb {
			return false
		}
		ni, nj := i+1, j+1
		if ca == '*' {
			ni = i
		}
		if cb == '*' {
			nj = j
		}
		if ni == i && nj == j {
			// Two stars: one of them moves on (covered above); consuming a
			// character with both staying leads nowhere new.
			return false
		}
		return reach(ni, nj)
	}
	return reach(0, 0)
}
