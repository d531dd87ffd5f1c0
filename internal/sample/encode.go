package sample

import (
	"strconv"
	"time"
)

// AppendJSON appends s in wire format v1 to buf. It is the collectors' hot
// path, hand-written because reflection-based encoding costs several times
// more per sample; names are DNS labels, so they need no escaping.
func AppendJSON(buf []byte, s *Sample) []byte {
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
	return append(buf, '}')
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
