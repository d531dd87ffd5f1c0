package sample

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"
)

// referenceDecode is Decode without the fast path: encoding/json only.
func referenceDecode(data []byte) ([]Result, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	if data[0] != '[' {
		r := Result{Raw: data}
		r.Err = referenceDecodeOne(data, &r.Sample)
		return []Result{r}, nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: not a JSON array of samples: %s", ErrMalformed, jsonReason(err))
	}
	out := make([]Result, len(raw))
	for i, m := range raw {
		out[i].Raw = m
		if err := referenceDecodeOne(m, &out[i].Sample); err != nil {
			out[i].Err = fmt.Errorf("element %d: %w", i, err)
		}
	}
	return out, nil
}

func referenceDecodeOne(data []byte, s *Sample) error { return decodeStd(data, s) }

func canonicalSeeds() [][]byte {
	eff := 0.75
	base := Sample{Cluster: "prod-east.b", Project: "payments", Namespace: "payments-api",
		Start: time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC), End: time.Date(2025, 6, 1, 10, 1, 0, 0, time.UTC),
		CPU:     Resources{Usage: 0.35, Request: 0.5, Quota: 2, Effective: &eff},
		Memory:  Resources{Usage: 1.2e9, Request: 2e9, Quota: 8e9},
		Storage: Resources{Usage: 5e9, Request: 2e10, Quota: 1e11}}
	neg := base
	neg.CPU = Resources{Usage: -1, Request: math.Copysign(0, -1), Quota: 1e-320}
	long := base
	long.End = base.Start.Add(25 * time.Hour)
	bad := base
	bad.Namespace = "Bad Name"
	labelled := base
	labelled.Labels = map[string]string{"team": "payments", "example.com/env": "prod"}
	badLabel := base
	badLabel.Labels = map[string]string{"team": "a b"}
	return [][]byte{
		AppendJSON(nil, &labelled),
		EncodeBatch(nil, []Sample{labelled, base, badLabel, labelled}),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0},"labels":{"team":"a","team":"b"}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0},"labels":{}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0},"labels":{"team":"a",}}`),
		AppendJSON(nil, &base),
		EncodeBatch(nil, []Sample{base, neg, long, bad}),
		EncodeBatch(nil, nil),
		AppendJSON(nil, &neg),
		[]byte(` ` + string(AppendJSON(nil, &base)) + "\n"),
		append(AppendJSON(nil, &base), '}'),
		[]byte(`[` + string(AppendJSON(nil, &base)) + `, ` + string(AppendJSON(nil, &base)) + `]`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":1e400,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-31T10:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":01,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-02-29T10:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2024-02-29T23:59:59Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T24:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T23:59:60Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"0000-01-01T00:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-00-10T00:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-00T00:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-13-01T00:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-04-31T00:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T10:60:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01t10:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T10:00:00z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n","start":"+025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","cpu":{"usage":0,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
		[]byte(`{"cluster":"a","project":"p","namespace":"n\u00e9","start":"2025-06-01T10:00:00+00:00","end":"2025-06-01T10:01:00Z","cpu":{"usage":1.,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0}}`),
	}
}

// FuzzFastPath checks that Decode, with its hand-written fast path for
// canonical messages, returns exactly what encoding/json alone returns:
// the same samples, raw elements and error messages, for any input.
func FuzzFastPath(f *testing.F) {
	for _, s := range canonicalSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, gerr := Decode(data)
		want, werr := referenceDecode(data)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("error %v, encoding/json %v", gerr, werr)
		}
		if len(got) != len(want) || (got == nil) != (want == nil) {
			t.Fatalf("%d results, encoding/json %d", len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if fmt.Sprint(g.Err) != fmt.Sprint(w.Err) {
				t.Fatalf("element %d: error %v, encoding/json %v", i, g.Err, w.Err)
			}
			if !bytes.Equal(g.Raw, w.Raw) {
				t.Fatalf("element %d: raw %q, encoding/json %q", i, g.Raw, w.Raw)
			}
			if !g.Sample.Start.Equal(w.Sample.Start) || !g.Sample.End.Equal(w.Sample.End) ||
				g.Sample.Start.Location().String() != w.Sample.Start.Location().String() ||
				g.Sample.End.Location().String() != w.Sample.End.Location().String() {
				t.Fatalf("element %d: times %v..%v, encoding/json %v..%v", i, g.Sample.Start, g.Sample.End, w.Sample.Start, w.Sample.End)
			}
			gs, ws := g.Sample, w.Sample
			gs.Start, gs.End, ws.Start, ws.End = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if !reflect.DeepEqual(gs, ws) || math.Signbit(gs.CPU.Request) != math.Signbit(ws.CPU.Request) {
				t.Fatalf("element %d: %+v, encoding/json %+v", i, gs, ws)
			}
		}
	})
}

// BenchmarkDecode decodes one collector message of 500 samples.
func BenchmarkDecode(b *testing.B) {
	samples := make([]Sample, 500)
	for i := range samples {
		samples[i] = Sample{Cluster: "sim-0", Project: fmt.Sprintf("project-%d", i%100), Namespace: fmt.Sprintf("ns-%d", i),
			Start: time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC), End: time.Date(2025, 6, 1, 10, 1, 0, 0, time.UTC),
			CPU: Resources{Usage: 0.123, Request: 0.5, Quota: 1}, Memory: Resources{Usage: 1.2e9, Request: 2147483648, Quota: 4294967296},
			Storage: Resources{Usage: 5368709120, Request: 10737418240, Quota: 107374182400}}
	}
	msg := EncodeBatch(nil, samples)
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := Decode(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := referenceDecode(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
