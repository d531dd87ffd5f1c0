package sample_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alauda/costmeter/internal/sample"
)

const valid = `{"cluster":"prod-east","project":"payments","namespace":"payments-api",
 "start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z",
 "cpu":{"usage":0.35,"request":0.5,"quota":2},
 "memory":{"usage":1.2e9,"request":2e9,"quota":8e9},
 "storage":{"usage":5e9,"request":2e10,"quota":1e11}}`

func TestDecodeValid(t *testing.T) {
	s, err := sample.DecodeOne([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if s.Cluster != "prod-east" || s.Project != "payments" || s.Namespace != "payments-api" {
		t.Errorf("names: %+v", s)
	}
	if s.CPU.Usage != 0.35 || s.CPU.EffectiveValue() != 0.5 || s.Memory.Quota != 8e9 || s.Storage.Request != 2e10 {
		t.Errorf("values: %+v", s)
	}
	if s.End.Sub(s.Start) != time.Minute {
		t.Errorf("window %s", s.End.Sub(s.Start))
	}
	// Round trip through the collector's encoder.
	back, err := sample.DecodeOne(sample.AppendJSON(nil, &s))
	if err != nil || back.CPU != s.CPU || back.Memory != s.Memory || !back.Start.Equal(s.Start) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

func TestValidationRules(t *testing.T) {
	tests := []struct {
		name, from, to string
		want           string // part of the error; "" means valid
	}{
		{"missing items are zero", `"cpu":{"usage":0.35,"request":0.5,"quota":2},`, ``, ""},
		{"explicit effective", `"quota":2}`, `"quota":2,"effective":3}`, ""},
		{"cluster with dots", `"prod-east"`, `"prod.east-1.example"`, ""},
		{"cluster required", `"cluster":"prod-east",`, ``, "cluster: required"},
		{"project required", `"project":"payments",`, ``, "project: required"},
		{"namespace required", `"namespace":"payments-api",`, ``, "namespace: required"},
		{"uppercase", `"payments-api"`, `"Payments"`, "namespace: \"Payments\" is not a lowercase DNS label"},
		{"colon", `"payments-api"`, `"a:b"`, "namespace"},
		{"brace", `"payments"`, `"{x}"`, "project"},
		{"star", `"payments"`, `"*"`, "project"},
		{"space", `"payments"`, `"a b"`, "project"},
		{"leading dash", `"payments"`, `"-a"`, "project"},
		{"trailing dash", `"payments"`, `"a-"`, "project: \"a-\" must end with a letter or digit"},
		{"dot in project", `"payments"`, `"a.b"`, "project"},
		{"too long", `"payments"`, `"` + strings.Repeat("a", 64) + `"`, "project: longer than 63"},
		{"63 is fine", `"payments"`, `"` + strings.Repeat("a", 63) + `"`, ""},
		{"cluster double dot", `"prod-east"`, `"a..b"`, "cluster"},
		{"start required", `"start":"2025-06-01T10:00:00Z",`, ``, "start: required"},
		{"end required", `"end":"2025-06-01T10:01:00Z",`, ``, "end: required"},
		{"not RFC 3339", `"2025-06-01T10:00:00Z"`, `"2025-06-01 10:00"`, "parsing time"},
		{"fractional second", `"2025-06-01T10:00:00Z"`, `"2025-06-01T10:00:00.5Z"`, "start: must be a whole second"},
		{"end before start", `"2025-06-01T10:01:00Z"`, `"2025-06-01T09:00:00Z"`, "end: must be after start"},
		{"empty window", `"2025-06-01T10:01:00Z"`, `"2025-06-01T10:00:00Z"`, "end: must be after start"},
		{"24h is fine", `"2025-06-01T10:01:00Z"`, `"2025-06-02T10:00:00Z"`, ""},
		{"over 24h", `"2025-06-01T10:01:00Z"`, `"2025-06-02T10:00:01Z"`, "longer than 24h0m0s"},
		{"negative", `"usage":0.35`, `"usage":-0.1`, "cpu.usage: must be >= 0"},
		{"NaN as string", `"usage":0.35`, `"usage":"NaN"`, "cannot unmarshal"},
		{"too many cores", `"usage":0.35`, `"usage":2e6`, "cpu.usage: 2e+06 is above the bound"},
		{"too many bytes", `"usage":1.2e9`, `"usage":2e15`, "memory.usage: 2e+15 is above the bound"},
		{"negative effective", `"quota":2}`, `"quota":2,"effective":-1}`, "cpu.effective: must be >= 0"},
		{"negative storage quota", `"quota":1e11`, `"quota":-1`, "storage.quota"},
		{"unknown field", `"cpu":`, `"cpuu":{},"cpu":`, "unknown field \"cpuu\""},
		{"string value", `"usage":0.35`, `"usage":"0.35"`, "cannot unmarshal"},
		{"trailing data", `"quota":1e11}}`, `"quota":1e11}}{}`, "trailing data"},
		{"labels", `"quota":1e11}`, `"quota":1e11},"labels":{"team":"payments","example.com/cost-center":"CC_42.a"}`, ""},
		{"eight labels", `"quota":1e11}`, `"quota":1e11},"labels":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1","g":"1","h":"1"}`, ""},
		{"nine labels", `"quota":1e11}`, `"quota":1e11},"labels":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1","g":"1","h":"1","i":"1"}`, "labels: 9 keys, at most 8"},
		{"empty label value", `"quota":1e11}`, `"quota":1e11},"labels":{"team":""}`, `labels: label "team": the value is empty`},
		{"bad label value", `"quota":1e11}`, `"quota":1e11},"labels":{"team":"a b"}`, `labels: label "team": value "a b": byte 1`},
		{"label value too long", `"quota":1e11}`, `"quota":1e11},"labels":{"team":"` + strings.Repeat("a", 64) + `"}`, "longer than 63"},
		{"bad label key", `"quota":1e11}`, `"quota":1e11},"labels":{"-team":"a"}`, `labels: label key "-team": must start and end`},
		{"uppercase key prefix", `"quota":1e11}`, `"quota":1e11},"labels":{"Example.com/team":"a"}`, `the prefix must be a lowercase DNS subdomain`},
		{"empty key prefix", `"quota":1e11}`, `"quota":1e11},"labels":{"/team":"a"}`, `the prefix before '/' is empty`},
		{"labels not strings", `"quota":1e11}`, `"quota":1e11},"labels":{"team":1}`, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := strings.Replace(valid, tt.from, tt.to, 1)
			if in == valid && tt.from != tt.to {
				t.Fatalf("test replaces nothing: %q", tt.from)
			}
			_, err := sample.DecodeOne([]byte(in))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if !errors.Is(err, sample.ErrInvalidSample) {
				t.Fatalf("%v does not wrap ErrInvalidSample", err)
			}
		})
	}
}

func TestDecodeMessages(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		results   int
		bad       []int // indexes with errors
		malformed bool  // the whole body is unusable
	}{
		{"one object", valid, 1, nil, false},
		{"array", "[" + valid + "," + valid + "]", 2, nil, false},
		{"array with a bad element", "[" + valid + `,{"cluster":"x"}]`, 2, []int{1}, false},
		{"empty array", "[]", 0, nil, false},
		{"empty", "  ", 0, nil, true},
		{"broken array", "[" + valid, 0, nil, true},
		{"not json", "hello", 1, []int{0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := sample.Decode([]byte(tt.body))
			if tt.malformed {
				if err == nil || !errors.Is(err, sample.ErrMalformed) {
					t.Fatalf("want ErrMalformed, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != tt.results {
				t.Fatalf("%d results, want %d", len(rs), tt.results)
			}
			bad := map[int]bool{}
			for _, i := range tt.bad {
				bad[i] = true
			}
			for i, r := range rs {
				if (r.Err != nil) != bad[i] {
					t.Errorf("element %d: err %v, want error %v", i, r.Err, bad[i])
				}
				if len(r.Raw) == 0 {
					t.Errorf("element %d has no raw bytes", i)
				}
			}
		})
	}
}

func TestCapacitySample(t *testing.T) {
	const capacity = `{"cluster":"prod-east","start":"2025-06-01T10:00:00Z","end":"2025-06-01T10:01:00Z","capacity":{"cpu":64,"memory":2.5e11,"storage":1e12}}`
	s, err := sample.DecodeOne([]byte(capacity))
	if err != nil {
		t.Fatal(err)
	}
	if !s.IsCapacity() || s.Capacity.CPU != 64 || s.Capacity.Memory != 2.5e11 || s.Capacity.Storage != 1e12 {
		t.Fatalf("decoded %+v", s)
	}
	if enc := string(sample.AppendJSON(nil, &s)); enc != strings.NewReplacer("2.5e11", "2.5e+11", "1e12", "1e+12").Replace(capacity) {
		t.Fatalf("encodes as %s", enc)
	}
	tests := []struct{ name, from, to, want string }{
		{"project", `"cluster":"prod-east",`, `"cluster":"prod-east","project":"p",`, "project: a capacity sample has none"},
		{"namespace", `"cluster":"prod-east",`, `"cluster":"prod-east","namespace":"n",`, "namespace: a capacity sample has none"},
		{"labels", `"capacity"`, `"labels":{"team":"a"},"capacity"`, "labels: a capacity sample has none"},
		{"items", `"capacity"`, `"cpu":{"usage":1},"capacity"`, "cpu, memory, storage: a capacity sample has none"},
		{"negative", `"cpu":64`, `"cpu":-1`, "capacity.cpu: must be >= 0"},
		{"too large", `"storage":1e12`, `"storage":1e20`, "capacity.storage: 1e+20 is above the bound"},
		{"window", `"2025-06-01T10:01:00Z"`, `"2025-06-01T09:00:00Z"`, "end: must be after start"},
		{"cluster", `"prod-east"`, `"Prod"`, "cluster: \"Prod\" is not a lowercase DNS label"},
		{"unknown field", `"cpu":64`, `"gpu":1,"cpu":64`, `unknown field "gpu"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := strings.Replace(capacity, tt.from, tt.to, 1)
			if in == capacity {
				t.Fatalf("test replaces nothing: %q", tt.from)
			}
			_, err := sample.DecodeOne([]byte(in))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, sample.ErrInvalidSample) {
				t.Fatalf("got %v, want an invalid-sample error containing %q", err, tt.want)
			}
		})
	}
}

func TestLabelsEncodeSortedAndFast(t *testing.T) {
	s, err := sample.DecodeOne([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	s.Labels = map[string]string{"team": "payments", "example.com/env": "prod"}
	enc := sample.AppendJSON(nil, &s)
	if !strings.HasSuffix(string(enc), `,"labels":{"example.com/env":"prod","team":"payments"}}`) {
		t.Fatalf("encodes as %s", enc)
	}
	rs, err := sample.Decode([]byte("[" + string(enc) + "," + string(enc) + "]"))
	if err != nil || len(rs) != 2 || rs[1].Err != nil || rs[1].Sample.Labels["example.com/env"] != "prod" || len(rs[1].Sample.Labels) != 2 {
		t.Fatalf("decoded %+v, %v", rs, err)
	}
}

func TestParseLabelKeys(t *testing.T) {
	keys, err := sample.ParseLabelKeys(" team, example.com/cost-center ,env")
	if err != nil || strings.Join(keys, "|") != "team|example.com/cost-center|env" {
		t.Fatalf("%q, %v", keys, err)
	}
	if keys, err := sample.ParseLabelKeys(" "); err != nil || keys != nil {
		t.Fatalf("empty list: %q, %v", keys, err)
	}
	for list, want := range map[string]string{
		"team,team":         `label key "team" is listed twice`,
		"a,b,c,d,e,f,g,h,i": "9 label keys, at most 8",
		"team,,env":         `label key "": the name is empty`,
		"Bad Key":           `label key "Bad Key": byte 3`,
	} {
		if _, err := sample.ParseLabelKeys(list); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", list, err, want)
		}
	}
}
