package kube

import "time"

// window holds one window's time-weighted sums per namespace: value ×
// seconds, in nanocores and bytes. Inputs are integers and durations whole
// seconds in practice, so the sums are exact in float64 up to 2^53 (a
// namespace of 2 TiB over an hour), and each average is one division.
type window struct {
	end  time.Time
	secs float64 // the window's length in seconds
	ns   map[string]*nsSums
	// capCPU, capMem, capStorage are the cluster's capacity × seconds.
	capCPU, capMem, capStorage float64
}

type nsSums struct {
	cpuUse, cpuReq, cpuEff, cpuQuota float64
	memUse, memReq, memEff, memQuota float64
	storageReq, storageQuota         float64
	claimSecs                        map[string]float64 // claim → seconds bound
}

func newWindow(end time.Time, iv time.Duration) *window {
	return &window{end: end, secs: iv.Seconds(), ns: map[string]*nsSums{}}
}

func (w *window) sums(ns string) *nsSums {
	a := w.ns[ns]
	if a == nil {
		a = &nsSums{claimSecs: map[string]float64{}}
		w.ns[ns] = a
	}
	return a
}

// add accounts the slot [from, to) of the window with the state of snap.
func (w *window) add(snap *snapshot, from, to time.Time) {
	secs := to.Sub(from).Seconds()
	if secs <= 0 {
		return
	}
	w.capCPU += float64(snap.capacity.cpu) * secs
	w.capMem += float64(snap.capacity.mem) * secs
	w.capStorage += float64(snap.capacity.storage) * secs
	for ns := range snap.projects {
		a := w.sums(ns)
		q := snap.quotas[ns]
		a.cpuQuota += float64(q.cpu) * secs
		a.memQuota += float64(q.mem) * secs
		a.storageQuota += float64(q.storage) * secs
	}
	for ns, cs := range snap.claims {
		a := w.sums(ns)
		for _, c := range cs {
			a.storageReq += float64(c.bytes) * secs
			a.claimSecs[c.name] += secs
		}
	}
	for i := range snap.pods {
		p := &snap.pods[i]
		ran := overlap(p.start, p.end, from, to)
		if ran <= 0 {
			continue
		}
		a := w.sums(p.pod.Namespace)
		eff := p.use.max(p.req)
		a.cpuReq += float64(p.req.cpu) * ran
		a.cpuUse += float64(p.use.cpu) * ran
		a.cpuEff += float64(eff.cpu) * ran
		a.memReq += float64(p.req.mem) * ran
		a.memUse += float64(p.use.mem) * ran
		a.memEff += float64(eff.mem) * ran
	}
}

// overlap is the seconds [start, end) and [from, to) share; a zero end is
// open.
func overlap(start, end, from, to time.Time) float64 {
	lo := maxTime(start, from)
	hi := to
	if !end.IsZero() && end.Before(hi) {
		hi = end
	}
	if !hi.After(lo) {
		return 0
	}
	return hi.Sub(lo).Seconds()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
