// Package spool keeps a collector's outgoing batches on disk until
// JetStream has acknowledged them, so that nothing already measured is lost
// while NATS is unreachable or when the collector is killed.
//
// # Layout
//
// A spool is one directory. Each batch (one NATS message) is one file,
// named after its sequence number, zero-padded so that names sort in the
// order the batches were appended:
//
//	LOCK                          flock(2)ed by the process that owns the spool
//	00000000000000000001.batch    oldest batch
//	00000000000000000002.batch
//	00000000000000000003.batch.tmp  a write that never completed (removed on open)
//	rejected/                     batches JetStream refused for good (see Rejected batches)
//
// A batch file is one header line followed by the message body:
//
//	CSPOOL1 <crc32c of body, 8 hex digits> <samples> <body bytes> <subject> <msg id>\n
//	<body>
//
// for example "CSPOOL1 1c291ca3 500 165012 cost.samples.prod-east 3f…9a\n[{…},…]".
// Subjects and message ids never contain spaces, so the header is split on
// single spaces; the body is the exact message payload.
//
// # Durability
//
// Append writes every batch to a .tmp file, fsyncs it, renames it to its
// .batch name and fsyncs the directory once per call: when Append returns,
// the batches survive kill -9 and power loss. Remove (after the JetStream
// acknowledgement) deletes the file without fsyncing the directory: a crash
// may bring an acknowledged batch back, and it is then published again with
// the same Nats-Msg-Id, which JetStream (and beyond its duplicate window, the
// aggregator's coverage) deduplicates. Sequence numbers continue from the
// highest file found on open.
//
// # Bound
//
// The spool holds at most MaxBytes (headers plus bodies). Appending past it
// removes the oldest batches first, each with an error log and its samples
// added to the dropped-samples counter: never a silent loss, never a full
// disk. A file that fails its checksum is removed and counted the same way.
//
// # Rejected batches
//
// A batch JetStream will never accept as it is (the publisher decides
// which refusals are final, see collector.Relay) is moved by Reject into
// the rejected/ subdirectory, byte for byte under the same file name, next
// to a sidecar <seq>.reason that says why and when:
//
//	rejected/00000000000000000002.batch
//	rejected/00000000000000000002.reason   reason: max_msg_size
//	                                       time: 2026-12-02T14:03:11Z
//	                                       subject: cost.samples.prod-east
//	                                       id: 3f…9a
//	                                       samples: 500
//	                                       bytes: 165070
//	                                       error: nats: API error: code=400 err_code=10054 …
//
// Rejected batches are not part of the queue: Len, Bytes and the queue's
// bound ignore them, and Oldest never returns them. They have a bound of
// their own, MaxBytes again, so that a refusal of every batch (a stream
// deleted for good) cannot fill the disk: past it the oldest rejected
// batches are deleted, each logged and counted as dropped with reason
// "rejected". Sequence numbers continue past the highest rejected file
// too, so a rejected file moved back into the spool directory (with the
// collector stopped) is replayed first on the next start and never takes
// the name of a newer batch.
package spool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// File naming and header constants of spool format v1.
const (
	// Magic starts every batch file's header line.
	Magic = "CSPOOL1"
	// Ext is the extension of a complete batch file.
	Ext = ".batch"
	// TmpExt marks a batch file still being written.
	TmpExt = ".tmp"
	// LockFile is the name of the file locked by the owning process.
	LockFile = "LOCK"
	// RejectedDir is the subdirectory of batches JetStream refused for good.
	RejectedDir = "rejected"
	// ReasonExt is the extension of a rejected batch's sidecar.
	ReasonExt = ".reason"
	// maxHeader bounds the header line read from a file.
	maxHeader = 512
)

// Reasons a batch is dropped: the value of the reason attribute of the
// dropped-samples counter.
const (
	ReasonFull     = "full"      // evicted to make room for newer batches
	ReasonTooLarge = "too_large" // one batch larger than the whole spool
	ReasonCorrupt  = "corrupt"   // a file that failed its checksum or header
	ReasonRejected = "rejected"  // a rejected batch deleted to keep rejected/ within the bound
)

// Errors callers can branch on.
var (
	// ErrLocked is returned by Open when another process owns the spool.
	ErrLocked = errors.New("spool is locked by another process")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("spool is closed")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Config locates and bounds a spool.
type Config struct {
	// Dir holds the batch files; it is created if missing.
	Dir string
	// MaxBytes bounds the files' total size.
	MaxBytes int64
}

// MinBytes is the smallest accepted bound: room for a few full batches.
const MinBytes = 1 << 20

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("--spool-dir: required"))
	}
	if c.MaxBytes < MinBytes {
		errs = append(errs, fmt.Errorf("--spool-max-bytes: %d is below the minimum %d", c.MaxBytes, MinBytes))
	}
	return errors.Join(errs...)
}

// Entry is one spooled batch: a NATS message and how many samples it holds.
type Entry struct {
	// Seq is assigned by Append; it orders the spool.
	Seq     uint64
	Subject string
	ID      string
	Samples int
	Data    []byte
}

// Option sets an optional dependency.
type Option func(*Spool)

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Spool) { s.log = l } }

// WithMeter sets the OTel meter (default: no-op).
func WithMeter(m metric.Meter) Option { return func(s *Spool) { s.meter = m } }

// WithClock sets the clock that dates rejections (default: time.Now).
func WithClock(now func() time.Time) Option { return func(s *Spool) { s.now = now } }

// meta is what the spool remembers of a batch without reading its file.
type meta struct {
	seq     uint64
	size    int64
	samples int
}

// Spool is an on-disk FIFO of batches. It is safe for one appender and one
// reader at a time (the source and the relay).
type Spool struct {
	dir      string
	maxBytes int64
	log      *slog.Logger
	meter    metric.Meter
	lock     *os.File
	now      func() time.Time

	dropped                          metric.Int64Counter
	rejectedBatches, rejectedSamples metric.Int64Counter
	reg                              metric.Registration

	mu            sync.Mutex
	index         []meta // by seq, oldest first
	bytes         int64
	rejected      []meta // rejected/, by seq, oldest first
	rejectedBytes int64
	next          uint64
	closed        bool
	ready         chan struct{}
}

// Open opens (creating if needed) the spool in cfg.Dir, takes its lock,
// removes unfinished writes and indexes the batches found, oldest first.
func Open(cfg Config, opts ...Option) (*Spool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Spool{dir: cfg.Dir, maxBytes: cfg.MaxBytes, log: slog.Default(), meter: noop.NewMeterProvider().Meter(""), now: time.Now, next: 1, ready: make(chan struct{}, 1)}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.With("component", "spool", "dir", cfg.Dir)
	if err := os.MkdirAll(filepath.Join(cfg.Dir, RejectedDir), 0o750); err != nil {
		return nil, fmt.Errorf("create spool directory: %w", err)
	}
	lock, err := lockDir(filepath.Join(cfg.Dir, LockFile))
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.instruments(); err != nil {
		s.lock.Close()
		return nil, err
	}
	if err := s.scan(); err != nil {
		s.reg.Unregister()
		s.lock.Close()
		return nil, err
	}
	if len(s.index) > 0 {
		s.log.Info("spool holds batches from a previous run; replaying", "batches", len(s.index), "bytes", s.bytes, "samples", s.samples())
		s.signal()
	}
	if len(s.rejected) > 0 {
		s.log.Warn("spool holds batches JetStream refused; see their .reason files", "batches", len(s.rejected), "bytes", s.rejectedBytes,
			"dir", filepath.Join(cfg.Dir, RejectedDir))
	}
	return s, nil
}

func (s *Spool) instruments() error {
	var err1, err2, err3, err4, err5, err6, err7 error
	s.dropped, err1 = s.meter.Int64Counter("cost.collector.spool.dropped", metric.WithUnit("{sample}"),
		metric.WithDescription("samples removed from the spool before JetStream acknowledged them, by reason"))
	batches, err2 := s.meter.Int64ObservableGauge("cost.collector.spool.batches", metric.WithUnit("{batch}"),
		metric.WithDescription("batches waiting in the spool for a JetStream acknowledgement"))
	bytes, err3 := s.meter.Int64ObservableGauge("cost.collector.spool.size", metric.WithUnit("By"),
		metric.WithDescription("bytes of the batches waiting in the spool"))
	s.rejectedBatches, err5 = s.meter.Int64Counter("cost.collector.rejected.batches", metric.WithUnit("{batch}"),
		metric.WithDescription("batches JetStream refused for good, moved to the spool's rejected/ directory, by reason"))
	s.rejectedSamples, err6 = s.meter.Int64Counter("cost.collector.rejected.samples", metric.WithUnit("{sample}"),
		metric.WithDescription("samples in the batches JetStream refused for good, by reason"))
	held, err7 := s.meter.Int64ObservableGauge("cost.collector.spool.rejected.batches", metric.WithUnit("{batch}"),
		metric.WithDescription("batches in the spool's rejected/ directory, waiting for an operator"))
	if err := errors.Join(err1, err2, err3, err5, err6, err7); err != nil {
		return fmt.Errorf("create spool instruments: %w", err)
	}
	s.reg, err4 = s.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		n, b := s.Len(), s.Bytes()
		o.ObserveInt64(batches, int64(n))
		o.ObserveInt64(bytes, b)
		o.ObserveInt64(held, int64(s.Rejected()))
		return nil
	}, batches, bytes, held)
	if err4 != nil {
		return fmt.Errorf("register spool gauges: %w", err4)
	}
	return nil
}

// scan indexes the directory: .tmp files are writes that Append never
// confirmed, so they are removed; .batch files are read up to their header.
func (s *Spool) scan() error {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read spool directory: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		switch {
		case strings.HasSuffix(name, TmpExt):
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("remove unfinished batch %s: %w", name, err)
			}
			s.log.Debug("removed unfinished batch", "file", name)
		case strings.HasSuffix(name, Ext):
			seq, err := strconv.ParseUint(strings.TrimSuffix(name, Ext), 10, 64)
			if err != nil || seq == 0 {
				s.log.Warn("ignoring a file that is not a spool batch", "file", name)
				continue
			}
			m, err := s.stat(seq)
			if err != nil {
				m.seq = seq
				s.drop(context.Background(), m, ReasonCorrupt, err)
				continue
			}
			s.index = append(s.index, m)
			s.bytes += m.size
		}
	}
	sort.Slice(s.index, func(i, j int) bool { return s.index[i].seq < s.index[j].seq })
	if n := len(s.index); n > 0 {
		s.next = s.index[n-1].seq + 1
	}
	return s.scanRejected()
}

// scanRejected indexes rejected/ by file size alone: its batches are only
// kept for an operator, never read back by the spool. Unfinished sidecars
// and sidecars whose batch is gone (moved back for a replay, or a crash
// between sidecar and move) are removed.
func (s *Spool) scanRejected() error {
	dir := filepath.Join(s.dir, RejectedDir)
	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read rejected batches: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, TmpExt) || strings.HasSuffix(name, ReasonExt) {
			batch := filepath.Join(dir, strings.TrimSuffix(name, ReasonExt)+Ext)
			if _, err := os.Stat(batch); strings.HasSuffix(name, TmpExt) || errors.Is(err, os.ErrNotExist) {
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					return fmt.Errorf("remove stale %s: %w", name, err)
				}
			}
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, Ext), 10, 64)
		if !strings.HasSuffix(name, Ext) || err != nil || seq == 0 {
			continue
		}
		info, err := de.Info()
		if err != nil {
			return fmt.Errorf("read rejected batch %s: %w", name, err)
		}
		s.rejected = append(s.rejected, meta{seq: seq, size: info.Size()})
		s.rejectedBytes += info.Size()
	}
	sort.Slice(s.rejected, func(i, j int) bool { return s.rejected[i].seq < s.rejected[j].seq })
	if n := len(s.rejected); n > 0 {
		s.next = max(s.next, s.rejected[n-1].seq+1)
	}
	return nil
}

// stat reads a batch file's header and checks that its size matches.
func (s *Spool) stat(seq uint64) (meta, error) {
	f, err := os.Open(s.path(seq))
	if err != nil {
		return meta{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return meta{}, err
	}
	line, err := bufio.NewReaderSize(io.LimitReader(f, maxHeader), maxHeader).ReadString('\n')
	if err != nil {
		return meta{}, fmt.Errorf("read header: %w", err)
	}
	h, err := parseHeader(line)
	if err != nil {
		return meta{}, err
	}
	if want := int64(len(line)) + int64(h.bodyLen); st.Size() != want {
		return meta{seq: seq, samples: h.samples}, fmt.Errorf("size %d, header says %d", st.Size(), want)
	}
	return meta{seq: seq, size: st.Size(), samples: h.samples}, nil
}

type header struct {
	crc     uint32
	samples int
	bodyLen int
	subject string
	id      string
}

func formatHeader(e *Entry) string {
	return fmt.Sprintf("%s %08x %d %d %s %s\n", Magic, crc32.Checksum(e.Data, castagnoli), e.Samples, len(e.Data), e.Subject, e.ID)
}

func parseHeader(line string) (header, error) {
	f := strings.Split(strings.TrimSuffix(line, "\n"), " ")
	if len(f) != 6 || f[0] != Magic {
		return header{}, fmt.Errorf("header %q is not %s <crc> <samples> <bytes> <subject> <id>", truncate(line), Magic)
	}
	crc, err1 := strconv.ParseUint(f[1], 16, 32)
	samples, err2 := strconv.Atoi(f[2])
	n, err3 := strconv.Atoi(f[3])
	if err := errors.Join(err1, err2, err3); err != nil || samples < 0 || n < 0 || f[4] == "" || f[5] == "" {
		return header{}, fmt.Errorf("header %q has a bad field", truncate(line))
	}
	return header{crc: uint32(crc), samples: samples, bodyLen: n, subject: f[4], id: f[5]}, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

func (s *Spool) path(seq uint64) string {
	return filepath.Join(s.dir, fileName(seq))
}

func fileName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, Ext) }

func (s *Spool) rejectedPath(seq uint64, ext string) string {
	return filepath.Join(s.dir, RejectedDir, fmt.Sprintf("%020d%s", seq, ext))
}

// Append stores entries durably, in order, assigning their sequence
// numbers. It makes room by dropping the oldest batches when the bound
// would be exceeded; a single batch larger than the whole bound is dropped
// itself. It returns only after the batches are fsynced.
func (s *Spool) Append(ctx context.Context, entries []Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	headers := make([]string, len(entries))
	var need int64
	keep := entries[:0:0]
	for i := range entries {
		e := &entries[i]
		if strings.ContainsAny(e.Subject, " \n") || strings.ContainsAny(e.ID, " \n") || e.Subject == "" || e.ID == "" {
			return fmt.Errorf("append batch: subject %q and id %q must be non-empty and without spaces", e.Subject, e.ID)
		}
		h := formatHeader(e)
		size := int64(len(h) + len(e.Data))
		if size > s.maxBytes {
			s.drop(ctx, meta{samples: e.Samples, size: size}, ReasonTooLarge, fmt.Errorf("batch of %d bytes is larger than the spool bound %d", size, s.maxBytes))
			continue
		}
		headers[len(keep)] = h
		keep = append(keep, *e)
		need += size
	}
	// Make room: oldest spooled batches first, then, if this call alone is
	// larger than the bound, its own oldest batches.
	for len(s.index) > 0 && s.bytes+need > s.maxBytes {
		m := s.index[0]
		s.index = s.index[1:]
		s.bytes -= m.size
		s.removeFile(m.seq)
		s.drop(ctx, m, ReasonFull, nil)
	}
	for len(keep) > 0 && need > s.maxBytes {
		size := int64(len(headers[0]) + len(keep[0].Data))
		s.drop(ctx, meta{samples: keep[0].Samples, size: size}, ReasonFull, nil)
		need -= size
		keep, headers = keep[1:], headers[1:]
	}
	added := make([]meta, 0, len(keep))
	var werr error
	for i := range keep {
		e := &keep[i]
		seq := s.next
		size, err := s.write(seq, headers[i], e.Data)
		if err != nil {
			werr = err
			break
		}
		s.next++
		added = append(added, meta{seq: seq, size: size, samples: e.Samples})
	}
	if len(added) > 0 {
		if err := syncDir(s.dir); err != nil {
			werr = errors.Join(werr, fmt.Errorf("sync spool directory: %w", err))
		}
		// Written files are indexed even when a later one failed: they are
		// on disk and a restart would find them anyway.
		s.index = append(s.index, added...)
		for _, m := range added {
			s.bytes += m.size
		}
		s.signal()
	}
	return werr
}

func (s *Spool) write(seq uint64, header string, body []byte) (int64, error) {
	final := s.path(seq)
	tmp := final + TmpExt
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return 0, fmt.Errorf("create batch %d: %w", seq, err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	_, err1 := w.WriteString(header)
	_, err2 := w.Write(body)
	err3 := w.Flush()
	err4 := f.Sync()
	err5 := f.Close()
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("write batch %d: %w", seq, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("commit batch %d: %w", seq, err)
	}
	return int64(len(header) + len(body)), nil
}

// drop logs and counts a batch that leaves the spool unpublished.
func (s *Spool) drop(ctx context.Context, m meta, reason string, cause error) {
	attrs := []any{"reason", reason, "samples", m.samples, "bytes", m.size}
	if m.seq != 0 {
		attrs = append(attrs, "seq", m.seq)
	}
	if cause != nil {
		attrs = append(attrs, "err", cause)
	}
	s.log.ErrorContext(ctx, "spool dropped a batch that JetStream never acknowledged", attrs...)
	s.dropped.Add(ctx, int64(m.samples), metric.WithAttributes(attribute.String("reason", reason)))
	if reason == ReasonCorrupt && m.seq != 0 {
		s.removeFile(m.seq)
	}
}

func (s *Spool) removeFile(seq uint64) {
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove batch file", "seq", seq, "err", err)
	}
}

func (s *Spool) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready receives a value after Append added batches (and on Open when the
// spool is not empty); a reader that found the spool empty waits on it.
func (s *Spool) Ready() <-chan struct{} { return s.ready }

// Oldest returns up to n of the oldest batches, bodies read from disk, in
// order. A batch that fails its checksum is removed and counted as dropped.
func (s *Spool) Oldest(ctx context.Context, n int) ([]Entry, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	metas := slices.Clone(s.index[:min(n, len(s.index))])
	s.mu.Unlock()
	out := make([]Entry, 0, len(metas))
	for _, m := range metas {
		e, err := s.read(m.seq)
		switch {
		case err == nil:
			out = append(out, e)
		case errors.Is(err, os.ErrNotExist):
			// Evicted meanwhile to make room.
		case errors.Is(err, errCorrupt):
			s.mu.Lock()
			if s.forget(m.seq) {
				s.drop(ctx, m, ReasonCorrupt, err)
			}
			s.mu.Unlock()
		default:
			return out, fmt.Errorf("read batch %d: %w", m.seq, err)
		}
	}
	return out, nil
}

var errCorrupt = errors.New("corrupt batch file")

func (s *Spool) read(seq uint64) (Entry, error) {
	b, err := os.ReadFile(s.path(seq))
	if err != nil {
		return Entry{}, err
	}
	nl := strings.IndexByte(string(b[:min(len(b), maxHeader)]), '\n')
	if nl < 0 {
		return Entry{}, fmt.Errorf("%w: no header line", errCorrupt)
	}
	h, err := parseHeader(string(b[:nl+1]))
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	body := b[nl+1:]
	if len(body) != h.bodyLen || crc32.Checksum(body, castagnoli) != h.crc {
		return Entry{}, fmt.Errorf("%w: body of %d bytes does not match its header (%d bytes, crc %08x)", errCorrupt, len(body), h.bodyLen, h.crc)
	}
	return Entry{Seq: seq, Subject: h.subject, ID: h.id, Samples: h.samples, Data: body}, nil
}

// find returns the position of seq in the index.
func (s *Spool) find(seq uint64) (int, bool) {
	return slices.BinarySearchFunc(s.index, seq, func(m meta, seq uint64) int {
		switch {
		case m.seq < seq:
			return -1
		case m.seq > seq:
			return 1
		}
		return 0
	})
}

// forget removes seq from the index; it reports whether it was there.
func (s *Spool) forget(seq uint64) bool {
	i, ok := s.find(seq)
	if !ok {
		return false
	}
	s.bytes -= s.index[i].size
	s.index = slices.Delete(s.index, i, i+1)
	return true
}

// Remove deletes acknowledged batches. Sequence numbers no longer in the
// spool (dropped meanwhile) are ignored.
func (s *Spool) Remove(seqs ...uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	var errs []error
	for _, seq := range seqs {
		if !s.forget(seq) {
			continue
		}
		if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove batch %d: %w", seq, err))
		}
	}
	return errors.Join(errs...)
}

// Reject moves batch e (as Oldest returned it) out of the queue into
// rejected/, with a sidecar recording reason, the time and cause; it logs
// the move once, at error level, and counts the batch and its samples by
// reason. A batch no longer in the queue (evicted meanwhile) is ignored.
// When the move fails the batch stays in the queue.
func (s *Spool) Reject(ctx context.Context, e Entry, reason string, cause error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	i, ok := s.find(e.Seq)
	if !ok {
		return nil
	}
	m := s.index[i]
	at := s.now().UTC()
	var why strings.Builder
	fmt.Fprintf(&why, "reason: %s\ntime: %s\nsubject: %s\nid: %s\nsamples: %d\nbytes: %d\n", reason, at.Format(time.RFC3339), e.Subject, e.ID, m.samples, m.size)
	if cause != nil {
		fmt.Fprintf(&why, "error: %s\n", strings.ReplaceAll(cause.Error(), "\n", " "))
	}
	// The sidecar first: a crash before the batch moves leaves it queued
	// (and the next refusal rewrites the sidecar), never a batch without
	// its reason.
	sidecar := s.rejectedPath(e.Seq, ReasonExt)
	if err := writeFileSync(sidecar, []byte(why.String())); err != nil {
		return fmt.Errorf("reject batch %d: %w", e.Seq, err)
	}
	dest := s.rejectedPath(e.Seq, Ext)
	if err := os.Rename(s.path(e.Seq), dest); err != nil {
		os.Remove(sidecar)
		return fmt.Errorf("reject batch %d: move it to %s: %w", e.Seq, RejectedDir, err)
	}
	if err := errors.Join(syncDir(filepath.Join(s.dir, RejectedDir)), syncDir(s.dir)); err != nil {
		// The batch is in rejected/ now; losing the rename to a power
		// failure only queues it again.
		s.log.WarnContext(ctx, "sync spool directories after rejecting a batch", "seq", e.Seq, "err", err)
	}
	s.index = slices.Delete(s.index, i, i+1)
	s.bytes -= m.size
	s.rejected = append(s.rejected, m)
	s.rejectedBytes += m.size
	byReason := metric.WithAttributes(attribute.String("reason", reason))
	s.rejectedBatches.Add(ctx, 1, byReason)
	s.rejectedSamples.Add(ctx, int64(m.samples), byReason)
	attrs := []any{"file", dest, "reason", reason, "subject", e.Subject, "samples", m.samples, "bytes", m.size}
	if cause != nil {
		attrs = append(attrs, "err", cause)
	}
	s.log.ErrorContext(ctx, "JetStream refused a batch for good; moved it aside", attrs...)
	// Keep rejected/ within the bound too, oldest first; the batch just
	// moved is never larger than the bound (the queue held it).
	for len(s.rejected) > 1 && s.rejectedBytes > s.maxBytes {
		old := s.rejected[0]
		s.rejected = s.rejected[1:]
		s.rejectedBytes -= old.size
		for _, ext := range []string{Ext, ReasonExt} {
			if err := os.Remove(s.rejectedPath(old.seq, ext)); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.WarnContext(ctx, "remove rejected batch", "seq", old.seq, "err", err)
			}
		}
		s.drop(ctx, old, ReasonRejected, fmt.Errorf("rejected batches exceed the spool bound %d", s.maxBytes))
	}
	return nil
}

// writeFileSync writes name through a fsynced temporary file and a rename.
func writeFileSync(name string, data []byte) error {
	tmp := name + TmpExt
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	_, err1 := f.Write(data)
	err2 := f.Sync()
	err3 := f.Close()
	if err := errors.Join(err1, err2, err3); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("commit %s: %w", name, err)
	}
	return nil
}

// Rejected is the number of batches in rejected/.
func (s *Spool) Rejected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rejected)
}

// Len is the number of batches waiting.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.index)
}

// Bytes is the size of the batches waiting.
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

func (s *Spool) samples() int {
	n := 0
	for _, m := range s.index {
		n += m.samples
	}
	return n
}

// Close releases the spool's lock; the batches stay on disk.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.reg != nil {
		err = s.reg.Unregister()
	}
	return errors.Join(err, s.lock.Close())
}
