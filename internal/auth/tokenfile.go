package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/alauda/costmeter/internal/filewatch"
	"github.com/alauda/costmeter/internal/sample"
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
const DefaultTokenFilePoll = filewatch.DefaultPoll

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

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
				if err := sample.CheckName(sample.NameProject, pr); err != nil {
					errs = append(errs, fmt.Errorf("%s: project %q is not a Kubernetes name: %w", where, pr, err))
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

// tokenTable is a parsed token file: principals by token hash.
type tokenTable = map[[sha256.Size]byte]*Principal

// TokenFile authenticates the tokens listed, by hash, in a file, and picks
// up changes to the file while it runs (a Kubernetes Secret mounted as a
// file is updated in place).
type TokenFile struct {
	w *filewatch.Watcher[tokenTable]
}

// NewTokenFile loads path; an unreadable or invalid file is an error.
// poll is how often Run looks for changes.
func NewTokenFile(path string, poll time.Duration, log *slog.Logger) (*TokenFile, error) {
	if poll <= 0 {
		poll = DefaultTokenFilePoll
	}
	w, err := filewatch.New(filewatch.Config[tokenTable]{
		What: "token file", Path: path, Poll: poll,
		Parse: func(data []byte, _ func(string) ([]byte, error)) (tokenTable, error) { return ParseTokenFile(data) },
		Reloaded: func(ctx context.Context, log *slog.Logger, t tokenTable) {
			log.InfoContext(ctx, "token file reloaded", "path", path, "tokens", len(t))
		},
	}, log)
	if err != nil {
		return nil, err
	}
	return &TokenFile{w: w}, nil
}

// Changed returns a channel that is closed the next time the tokens in
// force change (a reload of a changed, valid file): a request that
// outlives its authentication (a watch stream) authenticates again then.
// Take it before authenticating, so that no change falls in between.
func (t *TokenFile) Changed() <-chan struct{} { return t.w.Changed() }

// Err is the problem of the last reload, nil when the file in force is
// the file on disk.
func (t *TokenFile) Err() error { return t.w.Err() }

// Len is the number of tokens in force.
func (t *TokenFile) Len() int { return len(t.w.Current()) }

// Run polls the file for changes until ctx ends; it returns nil then.
func (t *TokenFile) Run(ctx context.Context) error { return t.w.Run(ctx) }

// Authenticate looks the token's hash up. The lookup leaks at most timing
// about hashes, which reveals nothing usable about any token.
func (t *TokenFile) Authenticate(_ context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, fmt.Errorf("empty token: %w", ErrInvalidToken)
	}
	p, ok := t.w.Current()[sha256.Sum256([]byte(token))]
	if !ok {
		return nil, fmt.Errorf("unknown token: %w", ErrInvalidToken)
	}
	cp := *p
	cp.Projects = append([]string(nil), p.Projects...)
	return &cp, nil
}
