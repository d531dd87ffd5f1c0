package sample_test

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/alauda/costmeter/internal/sample"
)

// FuzzDecode checks that no message body panics the decoder, that every
// error is an ErrInvalidSample, and that every accepted sample is valid and
// survives AppendJSON and a second decode unchanged (and encodes to the same
// bytes again). The seed corpus runs in `make test`; `make fuzz` explores.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		valid,
		"[" + valid + "," + valid + "]",
		`[]`,
		``,
		`   `,
		`null`,
		`[null]`,
		`{}`,
		`[{}]`,
		`not json`,
		`{"cluster":"east"`,
		`[{"cluster":"east"},`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z"} {}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00+08:00","end":"2025-06-01T00:01:00+08:00","cpu":{"usage":1,"effective":0}}`,
		`{"cluster":"a.b","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-02T00:00:00Z","cpu":{"usage":1e6},"memory":{"quota":1125899906842624}}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","cpu":{"usage":-0}}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","cpu":{"usage":-1}}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","cpu":{"usage":"NaN"}}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","cpu":{"usage":1e999}}`,
		`{"cluster":"a","project":"a:b{c}*","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z"}`,
		`{"cluster":"a","project":"p","namespace":"has space","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z"}`,
		`{"cluster":"a","project":"p","namespace":"n\u0000","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z"}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00.5Z","end":"2025-06-01T00:01:00Z"}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-02T00:00:01Z"}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","cpuz":{}}`,
		`{"cluster":"a","cluster":"b","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z"}`,
		`{"CLUSTER":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z"}`,
		`[1,"x",true,{"cluster":1}]`,
		`{"cluster":"` + strings.Repeat("a", 900) + `"}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","cpu":{"usage":1,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0},"labels":{"team":"a","example.com/env":"prod"}}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","cpu":{"usage":1,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0},"labels":{"team":"a","team":"b"}}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","cpu":{"usage":1,"request":0,"quota":0},"memory":{"usage":0,"request":0,"quota":0},"storage":{"usage":0,"request":0,"quota":0},"labels":{}}`,
		`{"cluster":"a","project":"p","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","labels":{"team":""}}`,
		`{"cluster":"a","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","capacity":{"cpu":64,"memory":2.5e11,"storage":1e12}}`,
		`{"cluster":"a","namespace":"n","start":"2025-06-01T00:00:00Z","end":"2025-06-01T00:01:00Z","capacity":{"cpu":64}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		results, err := sample.Decode(data)
		if err != nil {
			if !errors.Is(err, sample.ErrMalformed) {
				t.Fatalf("message error %v is not ErrMalformed", err)
			}
			return
		}
		for i, r := range results {
			if r.Err != nil {
				if !errors.Is(r.Err, sample.ErrInvalidSample) {
					t.Fatalf("element %d: error %v is not ErrInvalidSample", i, r.Err)
				}
				continue
			}
			if err := r.Sample.Validate(); err != nil {
				t.Fatalf("element %d accepted but invalid: %v", i, err)
			}
			enc := sample.AppendJSON(nil, &r.Sample)
			again, err := sample.DecodeOne(enc)
			if err != nil {
				t.Fatalf("element %d: re-encoded %s does not decode: %v", i, enc, err)
			}
			if !same(r.Sample, again) {
				t.Fatalf("element %d: %+v re-decoded as %+v", i, r.Sample, again)
			}
			if enc2 := sample.AppendJSON(nil, &again); string(enc2) != string(enc) {
				t.Fatalf("element %d: encodes as %s, then %s", i, enc, enc2)
			}
		}
	})
}

// same compares samples by value: instants (not zones), effective values
// (not pointers).
func same(a, b sample.Sample) bool {
	return a.Cluster == b.Cluster && a.Project == b.Project && a.Namespace == b.Namespace &&
		a.Start.Equal(b.Start) && a.End.Equal(b.End) &&
		sameResources(a.CPU, b.CPU) && sameResources(a.Memory, b.Memory) && sameResources(a.Storage, b.Storage) &&
		maps.Equal(a.Labels, b.Labels) && (a.Capacity == nil) == (b.Capacity == nil) &&
		(a.Capacity == nil || *a.Capacity == *b.Capacity)
}

func sameResources(a, b sample.Resources) bool {
	if (a.Effective == nil) != (b.Effective == nil) || (a.Effective != nil && *a.Effective != *b.Effective) {
		return false
	}
	return a.Usage == b.Usage && a.Request == b.Request && a.Quota == b.Quota
}
