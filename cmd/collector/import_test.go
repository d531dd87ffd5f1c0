package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alauda/costmeter/internal/natsconn"
	"github.com/alauda/costmeter/internal/stream"
	"github.com/alauda/costmeter/internal/testenv"
)

// TestImportFile: valid lines are published and acknowledged, invalid ones
// reported as "line N: reason" and skipped, exit status 2 when any line was
// rejected; importing the same file again publishes nothing new (message
// ids are content hashes, deduplicated by JetStream).
func TestImportFile(t *testing.T) {
	n := testenv.StartNATS(t)
	lines := []string{
		`{"cluster":"east","project":"p","namespace":"a","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":1}}`,
		``,
		`{"cluster":"west.example","project":"p","namespace":"a","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z"}`,
		`{"cluster":"east","project":"p","namespace":"BAD","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z"}`,
		`not json`,
		`{"cluster":"east","project":"p","namespace":"b","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":-1}}`,
		`{"cluster":"east","project":"p","namespace":"c","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z"}`,
	}
	file := filepath.Join(t.TempDir(), "samples.ndjson")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--source", "file", "--file", file, "--nats-url", n.URL()}
	for round := 1; round <= 2; round++ {
		var stderr bytes.Buffer
		if code := run(args, nil, &stderr); code != 2 {
			t.Fatalf("round %d: exit %d, want 2:\n%s", round, code, stderr.String())
		}
		for _, want := range []string{"line 4: invalid sample: namespace", "line 5: invalid sample: malformed JSON", "line 6: invalid sample: cpu.usage: must be >= 0", "imported 3 of 6 lines (3 rejected)"} {
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("round %d: stderr lacks %q:\n%s", round, want, stderr.String())
			}
		}
		// Valid lines of two clusters: two messages, however often imported.
		if got := streamMessages(t, n.URL()); got != 2 {
			t.Fatalf("round %d: %d messages in the stream, want 2", round, got)
		}
	}
	// Every line valid: exit 0; stdin works too.
	var stderr bytes.Buffer
	good := strings.Join([]string{lines[0], lines[6]}, "\n")
	if code := run([]string{"--source", "file", "--file", "-", "--nats-url", n.URL()}, strings.NewReader(good), &stderr); code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, stderr.String())
	}
}

func streamMessages(t *testing.T, url string) uint64 {
	t.Helper()
	nc, js, err := natsconn.Connect(url, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	st, err := js.Stream(context.Background(), stream.Samples)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
