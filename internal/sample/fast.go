package sample

import (
	"fmt"
	"strconv"
	"time"
)

// The fast path. Messages from collectors are in the canonical form that
// AppendJSON writes: fixed key order, no whitespace, names without
// escapes, times as YYYY-MM-DDTHH:MM:SSZ. Parsing that form by hand is
// several times cheaper than encoding/json, which dominated the
// aggregator's CPU profile during catch-up. Anything else, valid or not,
// falls back to encoding/json, so results and error messages are exactly
// those of the general path; the fast path itself never reports an error.

// decodeCanonicalArray parses a whole array message of canonical samples.
// ok is false when any part is not canonical.
func decodeCanonicalArray(data []byte) ([]Result, bool) {
	// Raw elements alias data (see Decode): a copy would double the memory
	// of the aggregator's batches, whose messages stay in hand until they
	// are acknowledged anyway.
	buf := data
	p := parser{b: buf, i: 1}
	out := make([]Result, 0, len(buf)/300+1)
	if p.lit("]") {
		return out, p.i == len(buf)
	}
	for {
		start := p.i
		var s Sample
		if !p.sample(&s) {
			return nil, false
		}
		r := Result{Sample: s, Raw: buf[start:p.i:p.i]}
		if err := r.Sample.Validate(); err != nil {
			r.Err = fmt.Errorf("element %d: %w", len(out), err)
		}
		out = append(out, r)
		if p.lit(",") {
			continue
		}
		if p.lit("]") && p.i == len(buf) {
			return out, true
		}
		return nil, false
	}
}

// decodeCanonical parses exactly one canonical sample object filling all
// of data; ok is false when data is anything else.
func decodeCanonical(data []byte, s *Sample) bool {
	p := parser{b: data}
	return p.sample(s) && p.i == len(data)
}

type parser struct {
	b []byte
	i int
	// names holds the cluster and project names read so far: the
	// samples of one message share them, so each is allocated once.
	names map[string]string
}

func (p *parser) lit(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *parser) sample(s *Sample) bool {
	var ok bool
	if !p.lit(`{"cluster":`) {
		return false
	}
	if s.Cluster, ok = p.name(); !ok || !p.lit(`,"project":`) {
		return false
	}
	if s.Project, ok = p.name(); !ok || !p.lit(`,"namespace":`) {
		return false
	}
	if s.Namespace, ok = p.str(); !ok || !p.lit(`,"start":`) {
		return false
	}
	if s.Start, ok = p.time(); !ok || !p.lit(`,"end":`) {
		return false
	}
	if s.End, ok = p.time(); !ok || !p.lit(`,"cpu":`) {
		return false
	}
	if !p.resources(&s.CPU) || !p.lit(`,"memory":`) || !p.resources(&s.Memory) ||
		!p.lit(`,"storage":`) || !p.resources(&s.Storage) {
		return false
	}
	if p.lit(`,"labels":{`) && !p.labels(s) {
		return false
	}
	return p.lit("}")
}

// labels reads a labels object's members after its '{', through its '}':
// strings without escapes, as AppendJSON writes them. A key given twice
// keeps its last value, as encoding/json does. Keys and values repeat
// across a message's samples, so they are interned like names.
func (p *parser) labels(s *Sample) bool {
	s.Labels = map[string]string{}
	if p.lit("}") {
		return true
	}
	for {
		k, ok := p.name()
		if !ok || !p.lit(":") {
			return false
		}
		v, ok := p.name()
		if !ok {
			return false
		}
		s.Labels[k] = v
		if p.lit(",") {
			continue
		}
		return p.lit("}")
	}
}

func (p *parser) resources(r *Resources) bool {
	var ok bool
	if !p.lit(`{"usage":`) {
		return false
	}
	if r.Usage, ok = p.num(); !ok || !p.lit(`,"request":`) {
		return false
	}
	if r.Request, ok = p.num(); !ok || !p.lit(`,"quota":`) {
		return false
	}
	if r.Quota, ok = p.num(); !ok {
		return false
	}
	if p.lit(`,"effective":`) {
		v, ok := p.num()
		if !ok {
			return false
		}
		r.Effective = &v
	}
	return p.lit("}")
}

// str reads a string of printable ASCII without escapes, the only strings
// whose bytes encoding/json would return unchanged.
func (p *parser) str() (string, bool) {
	b, ok := p.raw()
	return string(b), ok
}

// raw reads a string without escapes and returns its bytes, in p.b.
func (p *parser) raw() ([]byte, bool) {
	if !p.lit(`"`) {
		return nil, false
	}
	start := p.i
	for ; p.i < len(p.b); p.i++ {
		c := p.b[p.i]
		if c == '"' {
			b := p.b[start:p.i]
			p.i++
			return b, true
		}
		if c < 0x20 || c > 0x7e || c == '\\' {
			return nil, false
		}
	}
	return nil, false
}

// name is str for names that repeat across a message's samples.
func (p *parser) name() (string, bool) {
	b, ok := p.raw()
	if !ok {
		return "", false
	}
	if s, ok := p.names[string(b)]; ok {
		return s, true
	}
	if p.names == nil {
		p.names = map[string]string{}
	}
	s := string(b)
	p.names[s] = s
	return s, true
}

// time reads a UTC time of exactly the form AppendJSON writes,
// YYYY-MM-DDTHH:MM:SSZ, without allocating. What time.Parse would refuse
// (a month 13, February 30, second 60) is not canonical: the general path
// decides.
func (p *parser) time() (time.Time, bool) {
	b, ok := p.raw()
	if !ok || len(b) != len("2006-01-02T15:04:05Z") || b[4] != '-' || b[7] != '-' || b[10] != 'T' ||
		b[13] != ':' || b[16] != ':' || b[19] != 'Z' {
		return time.Time{}, false
	}
	num := func(at, n int) (int, bool) {
		v := 0
		for _, c := range b[at : at+n] {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(5, 2)
	d, ok3 := num(8, 2)
	h, ok4 := num(11, 2)
	mi, ok5 := num(14, 2)
	sec, ok6 := num(17, 2)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC)
	if t.Day() != d { // past the month's end: Date normalised it
		return time.Time{}, false
	}
	return t, true
}

// num reads a number of the JSON grammar and converts it as encoding/json
// does; out of range is not canonical (encoding/json reports it).
func (p *parser) num() (float64, bool) {
	b, start := p.b, p.i
	i := p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return 0, false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return 0, false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	v, err := strconv.ParseFloat(string(b[start:i]), 64)
	if err != nil {
		return 0, false
	}
	p.i = i
	return v, true
}
