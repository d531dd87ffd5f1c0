package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// TokenFileEntry is one token of a token file. The file holds only the
// SHA-256 of each token, so reading it (or a backup of it) gives no token
// away. Quote a hash made only of digits, or YAML reads it as a number.
//
//	tokens:
//	- name: console
//	  sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//	  scope: platform
//	- name: payments-team
//	  sha256: 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
//	  projects: [payments, billing]
type TokenFileEntry struct {
	// Name identifies the caller in logs.
	Name string `json:"name"`
	// SHA256 is the lower-case hex SHA-256 of the token.
	SHA256 string `json:"sha256"`
	// Scope is "platform" for platform scope; empty with Projects.
	Scope string `json:"scope,omitempty"`
	// Projects the token may see when Scope is empty.
	Projects []string `json:"projects,omitempty"`
}

// TokenFileContent is the whole token file.
type TokenFileContent struct {
	Tokens []TokenFileEntry `json:"tokens"`
}

// ScopePlatform is the Scope of a platform token.
const ScopePlatform = "platform"

// DefaultTokenFilePoll is how often the token file is checked for changes.
const DefaultTokenFilePoll = 2 * time.Second

var (
	sha256Hex   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	projectName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

// HashToken returns the lower-case hex SHA-256 of token, as a token file
// stores it (`printf %s "$TOKEN" | sha256sum`).
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ParseTokenFile decodes and checks a token file strictly: unknown fields,
// bad hashes, duplicate hashes and entries with both or neither scope are
// errors, so a typo never grants or drops access silently.
func ParseTokenFile(data []byte) (map[[sha256.Size]byte]*Principal, error) {
	var content TokenFileContent
	if err := yaml.UnmarshalStrict(data, &content); err != nil {
		return nil, fmt.Errorf("decode token file: %w", err)
	}
	byHash := make(map[[sha256.Size]byte]*Principal, len(content.Tokens))
	var errs []error
	for i, e := range content.Tokens {
		where := fmt.Sprintf("token %d (%q)", i+1, e.Name)
		if e.Name == "" {
			errs = append(errs, fmt.Errorf("token %d: name is required", i+1))
		}
		if !sha256Hex.MatchString(e.SHA256) {
			errs = append(errs, fmt.Errorf("%s: sha256 is not 64 lower-case hex digits, quoted (store the hash, never the token)", where))
			continue
		}
		var key [sha256.Size]byte
		_, _ = hex.Decode(key[:], []byte(e.SHA256))
		if _, dup := byHash[key]; dup {
			errs = append(errs, fmt.Errorf("%s: the same sha256 appears twice", where))
			continue
		}
		p := &Principal{Name: e.Name}
		switch {
		case e.Scope == ScopePlatform && len(e.Projects) == 0:
			p.Platform = true
		case e.Scope == "" && len(e.Projects) > 0:
			for _, pr := range e.Projects {
				if !projectName.MatchString(pr) {
					errs = append(errs, fmt.Errorf("%s: project %q is not a Kubernetes name", where, pr))
				}
			}
			p.Projects = append([]string(nil), e.Projects...)
		case e.Scope != "" && e.Scope != ScopePlatform:
			errs = append(errs, fmt.Errorf("%s: scope %q is not %q (list projects under projects instead)", where, e.Scope, ScopePlatform))
		default:
			errs = append(errs, fmt.Errorf("%s: give either scope: platform or a list of projects", where))
		}
		byHash[key] = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return byHash, nil
}

// TokenFile authenticates the tokens listed, by hash, in a file, and picks
// up changes to the file while it runs (a Kubernetes Secret mounted as a
// file is updated in place).
type TokenFile struct {
	path string
	poll time.Duration
	log  *slog.Logger

	mu     sync.RWMutex
	byHash map[[sha256.Size]byte]*Principal
	digest [sha256.Size]byte
	err    error         // of the last reload
	change chan struct{} // closed when byHash is replaced, then renewed
}

// NewTokenFile loads path; an unreadable or invalid file is an error.
// poll is how often Run looks for changes.
func NewTokenFile(path string, poll time.Duration, log *slog.Logger) (*TokenFile, error) {
	if poll <= 0 {
		poll = DefaultTokenFilePoll
	}
	t := &TokenFile{path: path, poll: poll, log: log, change: make(chan struct{})}
	if _, err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// reload reads the file and swaps the table in when its content changed.
// A file that turned invalid leaves the previous table in force.
func (t *TokenFile) reload() (bool, error) {
	changed, err := t.load()
	t.mu.Lock()
	t.err = err
	t.mu.Unlock()
	return changed, err
}

func (t *TokenFile) load() (bool, error) {
	data, err := os.ReadFile(t.path)
	if err != nil {
		return false, fmt.Errorf("read token file %s: %w", t.path, err)
	}
	digest := sha256.Sum256(data)
	t.mu.RLock()
	same := t.byHash != nil && bytes.Equal(digest[:], t.digest[:])
	t.mu.RUnlock()
	if same {
		return false, nil
	}
	byHash, err := ParseTokenFile(data)
	if err != nil {
		return false, fmt.Errorf("token file %s: %w", t.path, err)
	}
	t.mu.Lock()
	t.byHash, t.digest = byHash, digest
	close(t.change)
	t.change = make(chan struct{})
	t.mu.Unlock()
	return true, nil
}

// Changed returns a channel that is closed the next time the tokens in
// force change (a reload of a changed, valid file): a request that
// outlives its authentication (a watch stream) authenticates again then.
// Take it before authenticating, so that no change falls in between.
func (t *TokenFile) Changed() <-chan struct{} {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.change
}

// Err is the problem of the last reload, nil when the file in force is
// the file on disk.
func (t *TokenFile) Err() error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.err
}

// Len is the number of tokens in force.
func (t *TokenFile) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byHash)
}

// Run polls the file for changes until ctx ends; it returns nil then. It
// compares content, not modification times, so a change within the
// file system's time resolution is not missed.
func (t *TokenFile) Run(ctx context.Context) error {
	tick := time.NewTicker(t.poll)
	defer tick.Stop()
	var failing bool
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		changed, err := t.reload()
		switch {
		case err != nil && !failing:
			// Once per failure streak: the old tokens stay in force.
			t.log.ErrorContext(ctx, "token file not reloaded; keeping the previous tokens", "err", err)
			failing = true
		case err == nil && (changed || failing):
			t.log.InfoContext(ctx, "token file reloaded", "path", t.path, "tokens", t.Len())
			failing = false
		}
	}
}

// Authenticate looks the token's hash up. The lookup leaks at most timing
// about hashes, which reveals nothing usable about any token.
func (t *TokenFile) Authenticate(_ context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, fmt.Errorf("empty token: %w", ErrInvalidToken)
	}
	key := sha256.Sum256([]byte(token))
	t.mu.RLock()
	p, ok := t.byHash[key]
	t.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown token: %w", ErrInvalidToken)
	}
	cp := *p
	cp.Projects = append([]string(nil), p.Projects...)
	return &cp, nil
}
