//go:build unix

package wgnet_test

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/wgnet"
)

// BenchmarkSmallDeviceStream is BenchmarkTCPThroughput with the connector
// as the connector runs it (Config.SmallDevice: batches of 16, the packet
// gate), reporting the CPU the process spent per GiB (both ends live in
// it: compare builds in the same run, not with other machines) and
// allocations per op (one 128 KiB chunk).
func BenchmarkSmallDeviceStream(b *testing.B) {
	eachDirection(b, wgnet.Config{SmallDevice: true}, 7000, func(b *testing.B, l net.Listener, dial func() (net.Conn, error)) {
		b.ReportAllocs()
		cpu0 := processCPU()
		benchStream(b, l, dial)
		gib := float64(b.N) * (128 << 10) / (1 << 30)
		b.ReportMetric((processCPU()-cpu0).Seconds()/gib, "cpu-s/GiB")
	})
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
