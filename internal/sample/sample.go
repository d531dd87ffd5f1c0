// Package sample defines wire format v1 of a usage sample: one namespace's
// average CPU, memory and storage over one collection window, as collectors
// publish it and the aggregator consumes it, with the namespace's
// allocation labels; and of a capacity sample: a cluster's allocatable CPU
// and memory and its bound volumes' capacity over a window.
//
// A sample is validated completely before anything is counted: names follow
// the Kubernetes rules (so no name can break a Redis key or a NATS subject),
// the window is whole seconds, at most 24 h long, and every value is finite,
// non-negative and within Max* bounds (so that day sums fit in int64 with a
// wide margin, see internal/rollup).
package sample

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// ErrInvalidSample is wrapped by every validation and decoding error, so a
// caller can tell bad input (dead-letter it) from an infrastructure failure
// (retry it).
var ErrInvalidSample = errors.New("invalid sample")

// ErrMalformed marks input that is not JSON at all (it also wraps
// ErrInvalidSample).
var ErrMalformed = fmt.Errorf("%w: malformed JSON", ErrInvalidSample)

// Bounds of a single value. They are far above any real namespace and keep
// a day of the largest possible namespace under 10^17 fixed-point units, so
// that int64 sums of ~90 such namespaces in one project-day cannot overflow.
const (
	// MaxCores is the largest accepted CPU value, in cores.
	MaxCores = 1e6
	// MaxBytes is the largest accepted memory or storage value: 1 PiB.
	MaxBytes = 1 << 50
	// MaxWindow is the longest accepted collection window.
	MaxWindow = 24 * time.Hour
	// MaxNameLen is the longest accepted cluster, project or namespace name.
	MaxNameLen = 63
)

// Resources is one item's averages over the window. Units: cores for CPU,
// bytes for memory and storage.
type Resources struct {
	Usage   float64 `json:"usage"`
	Request float64 `json:"request"`
	Quota   float64 `json:"quota"`
	// Effective is optional; when absent it is max(Usage, Request). A
	// collector that knows pods sends the per-pod sum of max(usage, request).
	Effective *float64 `json:"effective,omitempty"`
}

// EffectiveValue returns Effective when it was sent, else max(Usage, Request).
func (r Resources) EffectiveValue() float64 {
	if r.Effective != nil {
		return *r.Effective
	}
	return math.Max(r.Usage, r.Request)
}

// Sample is one namespace's usage over [Start, End).
type Sample struct {
	Cluster   string    `json:"cluster"`
	Project   string    `json:"project"`
	Namespace string    `json:"namespace"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	CPU       Resources `json:"cpu"`
	Memory    Resources `json:"memory"`
	Storage   Resources `json:"storage"`
	// Labels are the namespace's values of the allocation label keys the
	// collector attaches (at most MaxLabels; Kubernetes label syntax, keys
	// verbatim). A key left out counts as unallocated for that key.
	Labels map[string]string `json:"labels,omitempty"`
	// Capacity makes this a capacity sample: the cluster's capacity over
	// [Start, End), with no project, namespace, items or labels.
	Capacity *Capacity `json:"capacity,omitempty"`
}

// Capacity is a cluster's capacity, averaged over the window: the
// allocatable CPU (cores) and memory (bytes) of its Ready nodes, and the
// capacity (bytes) of its bound PersistentVolumes.
type Capacity struct {
	CPU     float64 `json:"cpu"`
	Memory  float64 `json:"memory"`
	Storage float64 `json:"storage"`
}

// MaxCapacityCores and MaxCapacityBytes bound a capacity sample's values:
// 16 times a namespace's bounds (16 million cores, 16 PiB), far above any
// cluster, and a day of it (1.4e18 fixed-point units) still fits int64.
const (
	MaxCapacityCores = 16 * MaxCores
	MaxCapacityBytes = 16 * MaxBytes
)

// IsCapacity tells a capacity sample from a namespace's usage sample.
func (s *Sample) IsCapacity() bool { return s.Capacity != nil }

// Validate checks every rule of wire format v1 and returns the first broken
// one, naming the field, wrapped in ErrInvalidSample.
func (s *Sample) Validate() error {
	if s.Capacity != nil {
		return s.validateCapacity()
	}
	for _, n := range [...]struct{ what, name string }{{NameCluster, s.Cluster}, {NameProject, s.Project}, {NameNamespace, s.Namespace}} {
		if err := CheckName(n.what, n.name); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidSample, err)
		}
	}
	if err := s.checkWindow(); err != nil {
		return err
	}
	if err := s.CPU.check("cpu", MaxCores); err != nil {
		return err
	}
	if err := s.Memory.check("memory", MaxBytes); err != nil {
		return err
	}
	if err := s.Storage.check("storage", MaxBytes); err != nil {
		return err
	}
	if s.Labels != nil {
		return checkLabels(s.Labels)
	}
	return nil
}

// validateCapacity checks a capacity sample: a cluster, a window, the
// three capacities, and nothing of a usage sample.
func (s *Sample) validateCapacity() error {
	if err := CheckName(NameCluster, s.Cluster); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSample, err)
	}
	switch {
	case s.Project != "":
		return invalid("project: a capacity sample has none")
	case s.Namespace != "":
		return invalid("namespace: a capacity sample has none")
	case s.Labels != nil:
		return invalid("labels: a capacity sample has none")
	case s.CPU != Resources{} || s.Memory != Resources{} || s.Storage != Resources{}:
		return invalid("cpu, memory, storage: a capacity sample has none (its values are under capacity)")
	}
	if err := s.checkWindow(); err != nil {
		return err
	}
	c := s.Capacity
	if err := checkValue("capacity", "cpu", c.CPU, MaxCapacityCores); err != nil {
		return err
	}
	if err := checkValue("capacity", "memory", c.Memory, MaxCapacityBytes); err != nil {
		return err
	}
	return checkValue("capacity", "storage", c.Storage, MaxCapacityBytes)
}

// checkWindow checks the window's rules.
func (s *Sample) checkWindow() error {
	switch {
	case s.Start.IsZero():
		return invalid("start: required (RFC 3339)")
	case s.End.IsZero():
		return invalid("end: required (RFC 3339)")
	case s.Start.Nanosecond() != 0:
		return invalid("start: must be a whole second, got %s", s.Start.Format(time.RFC3339Nano))
	case s.End.Nanosecond() != 0:
		return invalid("end: must be a whole second, got %s", s.End.Format(time.RFC3339Nano))
	case !s.End.After(s.Start):
		return invalid("end: must be after start (%s), got %s", s.Start.Format(time.RFC3339), s.End.Format(time.RFC3339))
	case s.End.Sub(s.Start) > MaxWindow:
		return invalid("window: %s is longer than %s", s.End.Sub(s.Start), MaxWindow)
	}
	return nil
}

func (r Resources) check(item string, max float64) error {
	fields := [...]struct {
		name string
		v    float64
	}{{"usage", r.Usage}, {"request", r.Request}, {"quota", r.Quota}}
	for _, f := range fields {
		if err := checkValue(item, f.name, f.v, max); err != nil {
			return err
		}
	}
	if r.Effective != nil {
		return checkValue(item, "effective", *r.Effective, max)
	}
	return nil
}

// checkValue checks item.field's value v; the field's name is built only
// for the error (this runs four times per item of every sample).
func checkValue(item, field string, v, max float64) error {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return invalid("%s.%s: must be finite", item, field)
	case v < 0:
		return invalid("%s.%s: must be >= 0, got %g", item, field, v)
	case v > max:
		return invalid("%s.%s: %g is above the bound %g", item, field, v, max)
	}
	return nil
}

// The names CheckName checks, as they are called in messages.
const (
	NameCluster   = "cluster"
	NameProject   = "project"
	NameNamespace = "namespace"
)

// CheckName is the one name rule of the pipeline, used by the wire format,
// the API's parameters and the collectors' configuration: the Kubernetes
// DNS label rule (lowercase letters, digits and '-', starting and ending
// with a letter or digit, at most MaxNameLen characters); a cluster name
// (what NameCluster) may also hold dots between labels. Nothing else can
// break a Redis key or a NATS subject. The error starts with what and
// names the offending byte; it does not wrap ErrInvalidSample.
func CheckName(what, name string) error {
	dots := what == NameCluster
	if name == "" {
		return fmt.Errorf("%s: required", what)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%s: longer than %d characters", what, MaxNameLen)
	}
	prev := byte('.')
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && prev != '.':
		case c == '.' && dots && prev != '.' && prev != '-':
		default:
			return fmt.Errorf("%s: %q is not a lowercase DNS label (a-z, 0-9, '-'%s) at byte %d", what, truncate(name), dotsNote(dots), i)
		}
		prev = c
	}
	if prev == '-' || prev == '.' {
		return fmt.Errorf("%s: %q must end with a letter or digit", what, name)
	}
	return nil
}

func dotsNote(dots bool) string {
	if dots {
		return ", '.'"
	}
	return ""
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidSample}, args...)...)
}

// Result is one decoded element of a message: a valid Sample, or the reason
// it was rejected.
type Result struct {
	Sample Sample
	Err    error
	// Raw is the element's own bytes, kept for dead letters.
	Raw []byte
}

// Decode parses a message body: one sample object or a JSON array of them.
// Each element comes back with its own verdict, so one bad sample in a batch
// does not take the good ones down with it; an error is returned only when
// the body as a whole is unusable (empty, or an array that is not JSON).
// Unknown fields are rejected: a misspelt field would otherwise bill zero.
// A Result's Raw may alias data, so data must not change while the results
// are in use.
func Decode(data []byte) ([]Result, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	if data[0] != '[' {
		r := Result{Raw: data}
		r.Err = decodeOne(data, &r.Sample)
		return []Result{r}, nil
	}
	if out, ok := decodeCanonicalArray(data); ok {
		return out, nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: not a JSON array of samples: %s", ErrMalformed, jsonReason(err))
	}
	out := make([]Result, len(raw))
	for i, m := range raw {
		out[i].Raw = m
		if err := decodeOne(m, &out[i].Sample); err != nil {
			out[i].Err = fmt.Errorf("element %d: %w", i, err)
		}
	}
	return out, nil
}

// DecodeOne parses and validates exactly one sample object.
func DecodeOne(data []byte) (Sample, error) {
	var s Sample
	err := decodeOne(bytes.TrimSpace(data), &s)
	return s, err
}

func decodeOne(data []byte, s *Sample) error {
	if decodeCanonical(data, s) {
		return s.Validate()
	}
	*s = Sample{}
	return decodeStd(data, s)
}

// decodeStd is the general path: encoding/json, strict, then Validate. The
// canonical fast path must give exactly its results (a differential fuzz
// test holds it to that).
func decodeStd(data []byte, s *Sample) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(s); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: %s", ErrMalformed, jsonReason(err))
		}
		return invalid("%s", jsonReason(err))
	}
	if dec.More() {
		return invalid("trailing data after the sample object")
	}
	return s.Validate()
}

// jsonReason shortens encoding/json errors, which can quote megabytes of
// hostile input, to something fit for a log line and a dead-letter header.
func jsonReason(err error) string {
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}

// Key identifies the namespace a sample belongs to, independent of its
// project: exactly-once is decided per cluster and namespace.
func (s *Sample) Key() string { return s.Cluster + "/" + s.Namespace }
