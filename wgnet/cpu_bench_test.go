//go:build unix

package wgnet_test

import (
	"context"
	"net"
	"net/netip"
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
	p := NewPair(b, wgnet.Config{SmallDevice: true})
	defer p.Close()
	p.MustHandshake(b)
	port := uint16(7000)
	for _, dir := range []struct {
		name     string
		from, to *wgnet.Device
		addr     netip.Addr
	}{
		{"broker-to-connector", p.broker, p.connector, connectorAddr},
		{"connector-to-broker", p.connector, p.broker, brokerAddr},
	} {
		b.Run(dir.name, func(b *testing.B) {
			port++
			l, err := dir.to.ListenTCP(port)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ReportAllocs()
			cpu0 := processCPU()
			to := netip.AddrPortFrom(dir.addr, port)
			benchStream(b, l, func() (net.Conn, error) { return dir.from.DialTCP(context.Background(), to) })
			gib := float64(b.N) * (128 << 10) / (1 << 30)
			b.ReportMetric((processCPU()-cpu0).Seconds()/gib, "cpu-s/GiB")
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
