package sample

import (
	"strconv"
	"time"
)

// AppendJSON appends s in wire format v1 to buf. It is the collectors' hot
// path, hand-written because reflection-based encoding costs several times
// more per sample; names are DNS labels, so they need no escaping.
func AppendJSON(buf []byte, s *Sample) []byte {
	if s.Capacity != nil {
		return appendCapacity(buf, s)
	}
	buf = append(buf, `{"cluster":"`...)
	buf = append(buf, s.Cluster...)
	buf = append(buf, `","project":"`...)
	buf = append(buf, s.Project...)
	buf = append(buf, `","namespace":"`...)
	buf = append(buf, s.Namespace...)
	buf = append(buf, `","start":"`...)
	buf = s.Start.UTC().AppendFormat(buf, time.RFC3339)
	buf = append(buf, `","end":"`...)
	buf = s.End.UTC().AppendFormat(buf, time.RFC3339)
	buf = append(buf, `","cpu":`...)
	buf = appendResources(buf, &s.CPU)
	buf = append(buf, `,"memory":`...)
	buf = appendResources(buf, &s.Memory)
	buf = append(buf, `,"storage":`...)
	buf = appendResources(buf, &s.Storage)
	if len(s.Labels) > 0 {
		// Sorted, so that one namespace's samples are byte-identical;
		// keys and values are label syntax, which needs no escaping.
		buf = append(buf, `,"labels":{`...)
		for i, k := range sortedKeys(s.Labels) {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, '"')
			buf = append(buf, k...)
			buf = append(buf, `":"`...)
			buf = append(buf, s.Labels[k]...)
			buf = append(buf, '"')
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// appendCapacity appends a capacity sample.
func appendCapacity(buf []byte, s *Sample) []byte {
	buf = append(buf, `{"cluster":"`...)
	buf = append(buf, s.Cluster...)
	buf = append(buf, `","start":"`...)
	buf = s.Start.UTC().AppendFormat(buf, time.RFC3339)
	buf = append(buf, `","end":"`...)
	buf = s.End.UTC().AppendFormat(buf, time.RFC3339)
	buf = append(buf, `","capacity":{"cpu":`...)
	buf = strconv.AppendFloat(buf, s.Capacity.CPU, 'g', -1, 64)
	buf = append(buf, `,"memory":`...)
	buf = strconv.AppendFloat(buf, s.Capacity.Memory, 'g', -1, 64)
	buf = append(buf, `,"storage":`...)
	buf = strconv.AppendFloat(buf, s.Capacity.Storage, 'g', -1, 64)
	return append(buf, `}}`...)
}

func appendResources(buf []byte, r *Resources) []byte {
	buf = append(buf, `{"usage":`...)
	buf = strconv.AppendFloat(buf, r.Usage, 'g', -1, 64)
	buf = append(buf, `,"request":`...)
	buf = strconv.AppendFloat(buf, r.Request, 'g', -1, 64)
	buf = append(buf, `,"quota":`...)
	buf = strconv.AppendFloat(buf, r.Quota, 'g', -1, 64)
	if r.Effective != nil {
		buf = append(buf, `,"effective":`...)
		buf = strconv.AppendFloat(buf, *r.Effective, 'g', -1, 64)
	}
	return append(buf, '}')
}

// EncodeBatch encodes samples as one JSON array message.
func EncodeBatch(buf []byte, samples []Sample) []byte {
	buf = append(buf, '[')
	for i := range samples {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = AppendJSON(buf, &samples[i])
	}
	return append(buf, ']')
}
