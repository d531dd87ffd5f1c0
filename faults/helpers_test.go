package faults_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
)

type bytesBuffer = bytes.Buffer

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// countHandler counts log records whose message contains match.
type countHandler struct {
	match string
	n     atomic.Int64
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		h.n.Add(1)
	}
	return nil
}

func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }
func (h *countHandler) count() int64                       { return h.n.Load() }

func slogWith(h slog.Handler) *slog.Logger { return slog.New(h) }
