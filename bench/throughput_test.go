package bench_test

import (
	"context"
	"crypto/rand"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/tunnel"
)

// BenchmarkThroughput moves FIELDPASS_BENCH_MIB (default 64) MiB per op over
// one stream, engineer->device ("eng-to-dev", to a sink beside the
// connector) and device->engineer ("dev-to-eng", from a source), and the
// same bytes over plain loopback TCP to the same sink or source, one after
// the other in the same op. The engineer's end is either the stream
// broker.OpenStream returns ("direct") or a loopback TCP connection to a
// small proxy that opens the stream ("tcp-hop"), as the engineer's real
// connection reaches the broker. The clock runs from the first byte written
// until the target has counted every byte (upload) or the engineer has read
// the last one (download); stream set-up is not in it.
//
// Both WireGuard ends listen on 127.0.0.1, so both use wgnet's own
// single-address bind. wireguard-go's stock bind, which wgnet uses for an
// unspecified listen address (the broker's default, :51820), listens on
// every address of the host, so it cannot be kept on loopback and is not
// measured here.
func BenchmarkThroughput(b *testing.B) {
	size := int64(envInt(b, "FIELDPASS_BENCH_MIB", 64)) << 20
	e := newEnv(b)
	const device = "bench-throughput"
	sink, source := sinkServer(b), sourceServer(b)
	s := e.Enroll(device)
	c := startConnector(e, s, map[string]string{"sink": sink, "source": source})
	brokertest.WaitFor(b, 30*time.Second, "connector online", func() bool { return e.Broker.Connected(device) && c.Connected() })
	hops := map[string]string{"sink": hop(b, e.Broker, device, "sink"), "source": hop(b, e.Broker, device, "source")}
	targets := map[string]string{"sink": sink, "source": source}

	type direction struct {
		name, service string
		move          func(tunnel.HalfCloser, int64, []byte) error
	}
	for _, dir := range []direction{{"eng-to-dev", "sink", upload}, {"dev-to-eng", "source", download}} {
		for _, via := range []string{"direct", "tcp-hop"} {
			b.Run(dir.name+"/"+via, func(b *testing.B) {
				open := func() (tunnel.HalfCloser, error) {
					if via == "direct" {
						return e.Broker.OpenStream(context.Background(), device, dir.service, newSessionID())
					}
					return dialTCP(hops[dir.service])
				}
				buf := make([]byte, chunk)
				rand.Read(buf)
				// Warm up: the tunnel's TCP connection has been idle
				// since the connector came up.
				if err := transfer(open, dir.move, 8<<20, buf); err != nil {
					b.Fatal(err)
				}
				var fpTime, fpCPU, tcpTime time.Duration
				var ops int64
				for b.Loop() {
					cpu0 := processCPU()
					d, err := timed(open, dir.move, size, buf)
					if err != nil {
						b.Fatalf("through fieldpass: %v", err)
					}
					fpCPU += processCPU() - cpu0
					fpTime += d
					d, err = timed(func() (tunnel.HalfCloser, error) { return dialTCP(targets[dir.service]) }, dir.move, size, buf)
					if err != nil {
						b.Fatalf("over loopback TCP: %v", err)
					}
					tcpTime += d
					ops++
				}
				fp, tcp := mbPerSec(ops*size, fpTime), mbPerSec(ops*size, tcpTime)
				b.ReportMetric(fp, "fieldpass-MB/s")
				b.ReportMetric(tcp, "loopback-MB/s")
				b.ReportMetric(100*fp/tcp, "pct-of-loopback")
				// Both ends and the engineer share this process: cores
				// near the machine's count mean the path is CPU-bound.
				cores := fpCPU.Seconds() / fpTime.Seconds()
				b.ReportMetric(cores, "fieldpass-cpu-cores")
				b.ReportMetric(0, "ns/op")
				b.Logf("throughput %s %s: fieldpass %.0f MB/s, loopback TCP %.0f MB/s, %.1f%% of loopback; fieldpass used %.2f of %d cores (%d x %d MiB, %s)",
					dir.name, via, fp, tcp, 100*fp/tcp, cores, runtime.NumCPU(), ops, size>>20, time.Now().Format("2006-01-02"))
			})
		}
	}
}

// timed opens a connection and moves n bytes over it, and returns how long
// the move took.
func timed(open func() (tunnel.HalfCloser, error), move func(tunnel.HalfCloser, int64, []byte) error, n int64, buf []byte) (time.Duration, error) {
	c, err := open()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	err = move(c, n, buf)
	d := time.Since(start)
	finish(c)
	return d, err
}

func transfer(open func() (tunnel.HalfCloser, error), move func(tunnel.HalfCloser, int64, []byte) error, n int64, buf []byte) error {
	_, err := timed(open, move, n, buf)
	return err
}

// finish closes c after the other side has closed too, so no stream or
// connection is left half-open behind the measurement.
func finish(c tunnel.HalfCloser) {
	c.CloseWrite()
	io.Copy(io.Discard, c)
	c.Close()
}

// processCPU is the user+system CPU time this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mbPerSec is n bytes over d in MB/s, MB being 10^6 bytes as in
// README.md.
func mbPerSec(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}
