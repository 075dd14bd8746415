package wgtest_test

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/wgnet/wgtest"
)

// upstream is a UDP server on loopback behind a relay: it counts the
// packets it receives by source address and, if echo, sends each back.
type upstream struct {
	c  *net.UDPConn
	mu sync.Mutex
	by map[netip.AddrPort]int // source → packets received
}

func startUpstream(t *testing.T, echo bool) *upstream {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadBuffer(wgtest.RelaySocketBuffer)
	u := &upstream{c: c, by: map[netip.AddrPort]int{}}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.by[from]++
			u.mu.Unlock()
			if echo {
				c.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	return u
}

// sources returns the packets received so far by source address.
func (u *upstream) sources() map[netip.AddrPort]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := make(map[netip.AddrPort]int, len(u.by))
	for a, n := range u.by {
		m[a] = n
	}
	return m
}

// MustRelay starts a relay on loopback in front of u, closed at cleanup.
func MustRelay(t *testing.T, u *upstream) *wgtest.Relay {
	t.Helper()
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := wgtest.NewRelay(ln, func() (*net.UDPConn, error) {
		return net.DialUDP("udp", nil, u.c.LocalAddr().(*net.UDPAddr))
	})
	t.Cleanup(func() { r.Close() })
	return r
}

// MustClient is a UDP socket connected to r.
func MustClient(t *testing.T, r *wgtest.Relay) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrips sends numbered packets carrying their send time through an
// echoing upstream and checks that all of them come back, in order; it
// returns the shortest and longest round trip.
func roundTrips(t *testing.T, c *net.UDPConn, packets int) (lo, hi time.Duration) {
	t.Helper()
	go func() {
		for i := range packets {
			fmt.Fprintf(c, "%d %d", i, time.Now().UnixNano())
			time.Sleep(200 * time.Microsecond) // a burst the socket buffers take
		}
	}()
	lo = time.Hour
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range packets {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("packet %d of %d: %v", i, packets, err)
		}
		var seq, sent int64
		if _, err := fmt.Sscanf(string(buf[:n]), "%d %d", &seq, &sent); err != nil || seq != int64(i) {
			t.Fatalf("packet %d arrived as %q: want every packet, in order", i, buf[:n])
		}
		rtt := time.Since(time.Unix(0, sent))
		lo, hi = min(lo, rtt), max(hi, rtt)
	}
	return lo, hi
}

// waitCounters polls r's counters until done says they are complete.
func waitCounters(t *testing.T, r *wgtest.Relay, done func(wgtest.RelayCounters) bool) wgtest.RelayCounters {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := r.Counters()
		if done(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("counters %+v: still incomplete after 10 s", c)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRelay checks the relay on loopback: with a delay every packet
// arrives, in order, no sooner than the delay; at 0 it passes packets
// straight on; each client has an upstream flow of its own; a blackout
// drops everything and loss about its share.
func TestRelay(t *testing.T) {
	t.Parallel()
	const base, jitter, packets = 30 * time.Millisecond, 10 * time.Millisecond, 200

	t.Run("delay", func(t *testing.T) {
		t.Parallel()
		u := startUpstream(t, true)
		r := MustRelay(t, u)
		clients := []*net.UDPConn{MustClient(t, r), MustClient(t, r)}
		r.SetDelay(base, jitter)
		for i, c := range clients {
			lo, hi := roundTrips(t, c, packets)
			t.Logf("client %d, %s ± %s each way: round trips %s to %s", i, base, jitter, lo.Round(time.Millisecond), hi.Round(time.Millisecond))
			if lo < 2*(base-jitter) {
				t.Errorf("client %d: a round trip took %s: want at least 2×(%s−%s)", i, lo, base, jitter)
			}
		}
		// Two clients, so two flows, each through its own upstream socket.
		srcs := u.sources()
		if len(srcs) != len(clients) {
			t.Errorf("the upstream saw %d sources (%v): want one per client (%d)", len(srcs), srcs, len(clients))
		}
		for src, n := range srcs {
			if n != packets {
				t.Errorf("the upstream got %d packets from %s: want %d", n, src, packets)
			}
		}
		// The relay counts a packet once it is sent, which may be just
		// after the client read it.
		want := wgtest.RelayCounters{Up: 2 * packets, Down: 2 * packets}
		if got := waitCounters(t, r, func(c wgtest.RelayCounters) bool { return c.Down >= want.Down }); got != want {
			t.Errorf("counters %+v: want %+v", got, want)
		}
	})

	t.Run("pass-through", func(t *testing.T) {
		t.Parallel()
		r := MustRelay(t, startUpstream(t, true))
		c := MustClient(t, r)
		r.SetDelay(base, jitter)
		r.SetDelay(0, 0)
		lo, hi := roundTrips(t, c, packets)
		t.Logf("pass-through: round trips %s to %s", lo.Round(time.Microsecond), hi.Round(time.Microsecond))
		if lo >= 2*(base-jitter) {
			t.Errorf("the shortest round trip took %s: want no delay once it is set to 0", lo)
		}
	})

	t.Run("blackout", func(t *testing.T) {
		t.Parallel()
		u := startUpstream(t, true)
		r := MustRelay(t, u)
		c := MustClient(t, r)
		r.SetBlackout(true)
		for i := range packets {
			fmt.Fprintf(c, "%d", i)
		}
		got := waitCounters(t, r, func(c wgtest.RelayCounters) bool { return c.Dropped >= packets })
		if want := (wgtest.RelayCounters{Dropped: packets}); got != want {
			t.Errorf("counters in the blackout %+v: want %+v", got, want)
		}
		if n := len(u.sources()); n != 0 {
			t.Errorf("the upstream heard from %d sources in the blackout: want none", n)
		}
		r.SetBlackout(false)
		roundTrips(t, c, 10)
	})

	t.Run("loss", func(t *testing.T) {
		t.Parallel()
		const loss, sent = 0.25, 4000
		u := startUpstream(t, false)
		r := MustRelay(t, u)
		c := MustClient(t, r)
		r.SetLoss(loss)
		for i := range sent {
			fmt.Fprintf(c, "%d", i)
			if i%100 == 0 {
				time.Sleep(time.Millisecond) // within what the socket buffers take
			}
		}
		got := waitCounters(t, r, func(c wgtest.RelayCounters) bool { return c.Up+c.Dropped+c.Overflowed >= sent })
		// The count of drops is binomial, σ = √(n·p·(1−p)) ≈ 27: allow 4σ.
		share := float64(got.Dropped) / sent
		t.Logf("loss %.2f: %d of %d dropped (%.3f)", loss, got.Dropped, sent, share)
		if share < loss-0.03 || share > loss+0.03 {
			t.Errorf("%d of %d packets dropped (%.3f): want about %.2f", got.Dropped, sent, share, loss)
		}
		if got.Overflowed != 0 || got.Up+got.Dropped != sent {
			t.Errorf("counters %+v: want Up+Dropped = %d and no overflow", got, sent)
		}
		waitReceived := time.Now().Add(5 * time.Second)
		for {
			var n int
			for _, k := range u.sources() {
				n += k
			}
			if int64(n) == got.Up {
				break
			}
			if time.Now().After(waitReceived) {
				t.Fatalf("the upstream received %d packets: want the %d the relay passed on", n, got.Up)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}
