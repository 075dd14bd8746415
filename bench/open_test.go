package bench_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/tunnel"
)

// BenchmarkStreamOpen measures new-stream round trips, FIELDPASS_BENCH_STREAMS
// (default 1000) of each kind per op, interleaved so that the machine's
// noise falls on all alike:
//
//   - fieldpass: broker.OpenStream (yamux open, stream header through
//     WireGuard, the connector dials the echo service on loopback and
//     answers with its status) + write 1 byte + read it back + close;
//   - tcp-hop: the same through a loopback TCP proxy in front of the broker,
//     as the engineer's own connection reaches it (connect + 1-byte echo +
//     close on the engineer's side);
//   - loopback: a loopback TCP connect + 1-byte echo + close to the same echo
//     server, the baseline.
//
// Waiting for the far side's close is not timed.
func BenchmarkStreamOpen(b *testing.B) {
	n := envInt(b, "FIELDPASS_BENCH_STREAMS", 1000)
	e := newEnv(b)
	const device = "bench-open"
	echo := brokertest.EchoServer(b)
	s := e.Enroll(device)
	c := startConnector(e, s, map[string]string{"echo": echo})
	brokertest.WaitFor(b, 30*time.Second, "connector online", func() bool { return e.Broker.Connected(device) && c.Connected() })
	proxy := hop(b, e.Broker, device, "echo")

	kinds := []struct {
		name string
		open func() (tunnel.HalfCloser, error)
	}{
		{"fieldpass", func() (tunnel.HalfCloser, error) {
			return e.Broker.OpenStream(context.Background(), device, "echo", newSessionID())
		}},
		{"tcp-hop", func() (tunnel.HalfCloser, error) { return dialTCP(proxy) }},
		{"loopback", func() (tunnel.HalfCloser, error) { return dialTCP(echo) }},
	}
	for range 50 { // warm up
		for _, k := range kinds {
			if _, err := echoOnce(k.open); err != nil {
				b.Fatalf("%s: %v", k.name, err)
			}
		}
	}
	lat := make([][]time.Duration, len(kinds))
	for b.Loop() {
		for range n {
			for i, k := range kinds {
				d, err := echoOnce(k.open)
				if err != nil {
					b.Fatalf("%s: %v", k.name, err)
				}
				lat[i] = append(lat[i], d)
			}
		}
	}
	line := "stream open + 1-byte echo + close, p50/p99 µs:"
	for i, k := range kinds {
		slices.Sort(lat[i])
		p50, p99 := percentile(lat[i], 50), percentile(lat[i], 99)
		b.ReportMetric(micros(p50), k.name+"-p50-us")
		b.ReportMetric(micros(p99), k.name+"-p99-us")
		line += fmt.Sprintf(" %s %.0f/%.0f;", k.name, micros(p50), micros(p99))
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("%s over %d each (%s)", line[:len(line)-1], len(lat[0]), time.Now().Format("2006-01-02"))
}

// echoOnce opens a connection, sends one byte, reads it back and closes,
// and returns how long that took; it then waits, untimed, for the other
// side's close.
func echoOnce(open func() (tunnel.HalfCloser, error)) (time.Duration, error) {
	start := time.Now()
	c, err := open()
	if err != nil {
		return 0, err
	}
	var one [1]byte
	one[0] = 'x'
	if _, err := c.Write(one[:]); err != nil {
		c.Close()
		return 0, fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, one[:]); err != nil {
		c.Close()
		return 0, fmt.Errorf("read echo: %w", err)
	}
	err = c.CloseWrite()
	d := time.Since(start)
	if err != nil {
		c.Close()
		return 0, fmt.Errorf("close: %w", err)
	}
	io.Copy(io.Discard, c)
	c.Close()
	return d, nil
}
