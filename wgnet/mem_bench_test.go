package wgnet_test

import (
	"bufio"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/wgnet"
)

// BenchmarkStreamMemory is BenchmarkTCPThroughput's wgnet stream with
// the process's memory sampled every 10 ms meanwhile: peak runtime Sys and
// HeapInuse, and peak VmRSS, in MB (10^6 bytes), so that a change to the
// data path can be checked for what it costs in memory under a busy stream.
func BenchmarkStreamMemory(b *testing.B) {
	eachDirection(b, wgnet.Config{}, 6000, func(b *testing.B, l net.Listener, dial func() (net.Conn, error)) {
		runtime.GC()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var sys, heap, rss uint64
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				sys, heap, rss = max(sys, ms.Sys), max(heap, ms.HeapInuse), max(rss, vmRSS())
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		benchStream(b, l, dial)
		close(stop)
		wg.Wait()
		b.ReportMetric(float64(sys)/1e6, "peakSys-MB")
		b.ReportMetric(float64(heap)/1e6, "peakHeapInuse-MB")
		b.ReportMetric(float64(rss)/1e6, "peakRSS-MB")
	})
}

// vmRSS is the process's resident set size in bytes, 0 if unknown.
func vmRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
