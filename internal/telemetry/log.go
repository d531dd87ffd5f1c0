// Package telemetry sets up what every binary reports about itself: logs,
// and (with OpenTelemetry) metrics and traces.
package telemetry

import (
	"io"
	"log/slog"
)

// NewLogger returns a text or JSON logger at level (debug, info, warn,
// error) writing to w.
func NewLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	switch level {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
