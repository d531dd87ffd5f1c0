package allocation

import (
	"context"
	"log/slog"
	"time"

	"github.com/alauda/costmeter/internal/filewatch"
)

// Watch loads the policy file at path (amounts in decimals, the price
// list's) and keeps it current through the shared file watcher: the
// caller runs the returned watcher's Run in its run group and reads
// Current() for each bill, so a bill is computed under one policy. A
// missing or broken file is an error at start; a broken edit later keeps
// the policy in force and is logged.
func Watch(path string, decimals int, poll time.Duration, log *slog.Logger) (*filewatch.Watcher[*Policy], error) {
	return filewatch.New(filewatch.Config[*Policy]{
		What: "allocation policy",
		Path: path,
		Poll: poll,
		Parse: func(data []byte, _ func(string) ([]byte, error)) (*Policy, error) {
			return Parse(data, decimals)
		},
		Reloaded: func(ctx context.Context, log *slog.Logger, p *Policy) {
			log.InfoContext(ctx, "allocation policy reloaded", "path", path,
				"shared_namespaces", len(p.namespaces), "shared_labels", len(p.labels), "idle", p.idle.String(), "overheads", len(p.overheads))
		},
	}, log)
}
