package bench_test

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/tunnel"
)

// udpIPv4Overhead is what each datagram adds on the wire above its payload:
// a 20-byte IPv4 header and an 8-byte UDP header.
const udpIPv4Overhead = 28

// BenchmarkIdleWire measures what an idle connected device costs on the wire, at
// a WireGuard keepalive of FIELDPASS_BENCH_KEEPALIVE (default 25 s, the
// connector's own; any other value is set for the device on the broker, as
// an operator would with fieldpass-broker device keepalive) and the default
// broker settings: a UDP relay of
// our own sits between the connector (whose State.Endpoints point at it) and
// the broker, and counts datagrams and bytes each way by WireGuard message
// type, headers included. The window (FIELDPASS_BENCH_IDLE, default 6m)
// starts once the device is connected and is long enough to hold
// WireGuard's rekeys (every 120 s).
//
// Run it once: FIELDPASS_BENCH=1 go test -run '^$' -bench IdleWire -benchtime 1x.
// A higher -benchtime lengthens the window that many times.
func BenchmarkIdleWire(b *testing.B) {
	gate(b)
	window := envDuration(b, "FIELDPASS_BENCH_IDLE", 6*time.Minute)
	keepalive := envDuration(b, "FIELDPASS_BENCH_KEEPALIVE", tunnel.DefaultKeepalive)
	e := newEnv(b)
	r := startRelay(b, e.Endpoint())
	const device = "idle-1"
	s := e.Enroll(device)
	if keepalive != tunnel.DefaultKeepalive {
		if _, err := e.DB.SetDeviceKeepalive(b.Context(), device, keepalive); err != nil {
			b.Fatal(err)
		}
	}
	s.Endpoints = []string{r.front.LocalAddr().String()}
	c := startConnector(e, s, map[string]string{"ssh": "127.0.0.1:22"})
	took := brokertest.WaitFor(b, 30*time.Second, "connector online", func() bool { return e.Broker.Connected(device) && c.Connected() })
	// The broker answers the hello's last data with a keepalive 10 s later
	// (WireGuard's passive keepalive): part of connecting, not of idling.
	time.Sleep(15 * time.Second)
	up0, down0 := r.snapshot()

	start := time.Now()
	for b.Loop() {
		time.Sleep(window)
	}
	up1, down1 := r.snapshot()
	elapsed := time.Since(start)
	marks := r.rekeys(start)
	if !c.Connected() || !e.Broker.Connected(device) {
		b.Fatal("the device lost its session during the idle window")
	}
	if got := c.Keepalive(); got != keepalive {
		b.Fatalf("the connector's keepalive is %s, want %s", got, keepalive)
	}
	up, down := up1.minus(up0), down1.minus(down0)

	// Benchmark output is cut after 10 lines: keep it short.
	perDay := func(bytes int64) float64 { return float64(bytes) * float64(24*time.Hour) / float64(elapsed) }
	var sb strings.Builder
	fmt.Fprintf(&sb, "idle wire over %s (%s), keepalive %s, IPv4+UDP headers included; connecting took %s and %d bytes up, %d down",
		elapsed.Round(time.Second), time.Now().Format("2006-01-02"), keepalive, took.Round(time.Millisecond), up0.total().bytes, down0.total().bytes)
	for _, d := range []struct {
		name string
		st   wireStats
	}{{"device->broker", up}, {"broker->device", down}} {
		tot := d.st.total()
		fmt.Fprintf(&sb, "\n  %s: %d datagrams, %d bytes = %.0f bytes/day", d.name, tot.datagrams, tot.bytes, perDay(tot.bytes))
		sep := " ("
		for _, k := range wireKinds {
			if c := d.st[k]; c.datagrams > 0 {
				fmt.Fprintf(&sb, "%s%s %d x = %d B", sep, k, c.datagrams, c.bytes)
				sep = ", "
			}
		}
		if sep == ", " {
			sb.WriteString(")")
		}
	}
	total := up.total().bytes + down.total().bytes
	day := perDay(total)
	target := "met"
	if day > 0.5e6 {
		target = "NOT met"
	}
	fmt.Fprintf(&sb, "\n  both ways: %d bytes = %.0f KB/h, %.3f MB/day, %.1f MB/month (30 days; target <= 0.5 MB/day: %s)",
		total, day/24/1e3, day/1e6, day*30/1e6, target)
	// A window holds a fractional number of rekey cycles, so the plain
	// extrapolation over- or undercounts handshakes. From one handshake
	// initiation to the last one is a whole number of cycles.
	if len(marks) >= 2 {
		first, last := marks[0], marks[len(marks)-1]
		span := last.at.Sub(first.at)
		cyc := last.up.minus(first.up).total().bytes + last.down.minus(first.down).total().bytes
		cday := float64(cyc) * float64(24*time.Hour) / float64(span)
		fmt.Fprintf(&sb, "\n  over whole rekey cycles (%d, one every %s): %d bytes in %s = %.3f MB/day, %.1f MB/month",
			len(marks)-1, (span / time.Duration(len(marks)-1)).Round(time.Second), cyc, span.Round(time.Second), cday/1e6, cday*30/1e6)
		b.ReportMetric(cday, "cycle-bytes/day")
	}
	fmt.Fprintf(&sb, "\n  datagrams other than keepalives: %s", r.timeline(start))
	b.Log(sb.String())
	b.ReportMetric(day, "bytes/day")
	b.ReportMetric(day*30/1e6, "MB/month")
	b.ReportMetric(perDay(up.total().bytes), "up-bytes/day")
	b.ReportMetric(perDay(down.total().bytes), "down-bytes/day")
	b.ReportMetric(float64(up["initiation"].datagrams), "handshakes")
	b.ReportMetric(0, "ns/op")
}

// wireKinds are the WireGuard message types (the first byte of a datagram;
// a type-4 datagram with no payload, 32 bytes, is a keepalive), in the
// order they are reported.
var wireKinds = []string{"initiation", "response", "cookie", "keepalive", "data", "other"}

// wireKind names the WireGuard message in a datagram.
func wireKind(p []byte) string {
	if len(p) < 4 || p[1] != 0 || p[2] != 0 || p[3] != 0 {
		return "other"
	}
	switch p[0] {
	case 1:
		return "initiation"
	case 2:
		return "response"
	case 3:
		return "cookie"
	case 4:
		if len(p) == 32 {
			return "keepalive"
		}
		return "data"
	}
	return "other"
}

func TestWireKind(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
		want string
	}{
		{"initiation", append([]byte{1, 0, 0, 0}, make([]byte, 144)...), "initiation"},
		{"response", append([]byte{2, 0, 0, 0}, make([]byte, 88)...), "response"},
		{"cookie", append([]byte{3, 0, 0, 0}, make([]byte, 60)...), "cookie"},
		{"keepalive", append([]byte{4, 0, 0, 0}, make([]byte, 28)...), "keepalive"},
		{"data", append([]byte{4, 0, 0, 0}, make([]byte, 60)...), "data"},
		{"reserved bytes set", []byte{4, 1, 0, 0}, "other"},
		{"unknown type", []byte{9, 0, 0, 0}, "other"},
		{"short", []byte{4}, "other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := wireKind(tc.p); got != tc.want {
				t.Errorf("wireKind = %s, want %s", got, tc.want)
			}
		})
	}
}

type wireCount struct{ datagrams, bytes int64 }

// wireStats counts datagrams by kind; bytes include IPv4+UDP headers.
type wireStats map[string]wireCount

func (s wireStats) add(p []byte) {
	c := s[wireKind(p)]
	c.datagrams++
	c.bytes += int64(len(p)) + udpIPv4Overhead
	s[wireKind(p)] = c
}

func (s wireStats) total() wireCount {
	var t wireCount
	for _, c := range s {
		t.datagrams += c.datagrams
		t.bytes += c.bytes
	}
	return t
}

func (s wireStats) minus(old wireStats) wireStats {
	d := wireStats{}
	for k, c := range s {
		d[k] = wireCount{c.datagrams - old[k].datagrams, c.bytes - old[k].bytes}
	}
	return d
}

// relay forwards one client's datagrams to the broker and the broker's
// back, counting both ways. The client's address is learnt from its
// datagrams (the last one wins, as WireGuard roaming would have it).
type relay struct {
	front, back *net.UDPConn // front faces the connector, back the broker
	broker      netip.AddrPort

	mu       sync.Mutex // guards the fields below
	client   netip.AddrPort
	up, down wireStats
	marks    []rekeyMark
	events   []wireEvent
}

// rekeyMark is the count just before the device sent a handshake
// initiation.
type rekeyMark struct {
	at       time.Time
	up, down wireStats
}

// wireEvent is one datagram other than a keepalive.
type wireEvent struct {
	at   time.Time
	up   bool
	kind string
	size int
}

func startRelay(tb testing.TB, broker netip.AddrPort) *relay {
	tb.Helper()
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	front, err := net.ListenUDP("udp4", lo)
	if err != nil {
		tb.Fatal(err)
	}
	back, err := net.ListenUDP("udp4", lo)
	if err != nil {
		front.Close()
		tb.Fatal(err)
	}
	r := &relay{front: front, back: back, broker: broker, up: wireStats{}, down: wireStats{}}
	var wg sync.WaitGroup
	wg.Add(2)
	errc := make(chan error, 2)
	go func() { defer wg.Done(); errc <- r.forward(r.front, r.back, true) }()
	go func() { defer wg.Done(); errc <- r.forward(r.back, r.front, false) }()
	tb.Cleanup(func() {
		front.Close()
		back.Close()
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil && !errors.Is(err, net.ErrClosed) {
				tb.Errorf("relay: %v", err)
			}
		}
	})
	return r
}

// forward copies datagrams from src to dst until src is closed.
func (r *relay) forward(src, dst *net.UDPConn, up bool) error {
	buf := make([]byte, 65535)
	for {
		n, from, err := src.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		p := buf[:n]
		r.mu.Lock()
		var to netip.AddrPort
		if k := wireKind(p); k != "keepalive" {
			r.events = append(r.events, wireEvent{time.Now(), up, k, len(p)})
		}
		if up {
			r.client = from
			if wireKind(p) == "initiation" {
				r.marks = append(r.marks, rekeyMark{time.Now(), maps.Clone(r.up), maps.Clone(r.down)})
			}
			r.up.add(p)
			to = r.broker
		} else if from == r.broker {
			r.down.add(p)
			to = r.client
		}
		r.mu.Unlock()
		if !to.IsValid() {
			continue // not from the broker, or no client yet
		}
		// A failed send (a client gone for a moment) is no reason to
		// stop relaying; a closed socket ends the next read.
		dst.WriteToUDPAddrPort(p, to)
	}
}

// rekeys returns the marks of the handshakes begun since since. A retried
// initiation (WireGuard retries every 5 s until answered) is part of the
// handshake before it.
func (r *relay) rekeys(since time.Time) []rekeyMark {
	r.mu.Lock()
	defer r.mu.Unlock()
	var m []rekeyMark
	var last time.Time
	for _, k := range r.marks {
		retry := !last.IsZero() && k.at.Sub(last) < 30*time.Second
		last = k.at
		if !k.at.Before(since) && !retry {
			m = append(m, k)
		}
	}
	return m
}

// timeline lists the datagrams other than keepalives since since, with
// their time from it, on one line.
func (r *relay) timeline(since time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ev []string
	for _, e := range r.events {
		if e.at.Before(since) {
			continue
		}
		dir := "down"
		if e.up {
			dir = "up"
		}
		ev = append(ev, fmt.Sprintf("+%.1fs %s %s %d B", e.at.Sub(since).Seconds(), dir, e.kind, e.size))
	}
	if len(ev) == 0 {
		return "none"
	}
	return strings.Join(ev, ", ")
}

// snapshot returns copies of the counts so far.
func (r *relay) snapshot() (up, down wireStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.up), maps.Clone(r.down)
}
