package benchrun

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"
)

// memWatch measures one phase of this process: peak RSS (VmHWM, reset at
// the start of the phase through /proc/self/clear_refs) and peak Go heap
// (sampled every 20 ms), and the CPU time it used.
type memWatch struct {
	// also says what else the process holds in this phase.
	also     string
	reset    bool
	cpu0     time.Duration
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	peakHeap uint64
}

func watchMemory() *memWatch {
	// Start from what is live: garbage of earlier phases (and the embedded
	// server's caches of deleted streams) is not this phase's.
	runtime.GC()
	debug.FreeOSMemory()
	// Writing 5 to clear_refs resets the peak RSS to the current RSS.
	w := &memWatch{stop: make(chan struct{}), cpu0: processCPU()}
	w.reset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			w.mu.Lock()
			w.peakHeap = max(w.peakHeap, s[0].Value.Uint64())
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// done returns the peak RSS and peak heap in bytes and the CPU seconds.
func (w *memWatch) done() (rss, heap uint64, cpu float64) {
	close(w.stop)
	w.wg.Wait()
	return procStatus("VmHWM"), w.peakHeap, (processCPU() - w.cpu0).Seconds()
}

func (w *memWatch) note() string {
	if w.reset {
		return "this process (in-process: also the embedded nats-server" + w.also + "); peak RSS reset at the phase start"
	}
	return "this process (in-process: also the embedded nats-server" + w.also + "); peak RSS since process start (clear_refs not writable)"
}

// procStatus reads a kB field of /proc/self/status, in bytes.
func procStatus(field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return n * 1024
	}
	return 0
}

// processCPU is the user + system CPU time of this process so far.
func processCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start after ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	// utime and stime are fields 14 and 15 of stat, 12 and 13 here.
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticksPerSecond
}

const mib = 1 << 20
