//go:build linux

package e2e_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// delayRelay stands in for netem's delay, which this kernel lacks: a UDP
// relay that holds each packet for a base delay ± uniform jitter before
// passing it on, in each direction, without reordering (a packet never
// leaves before the one in front of it, as on a real path whose jitter
// comes from queueing). The delay can be changed while traffic flows; 0 is
// pass-through.
//
// Each client address gets an upstream socket of its own, so the server
// sees one endpoint per client, as behind a NAT. In the field network it
// sits in the internet namespace, on the carrier's side of the broker
// (installDelayRelay).
type delayRelay struct {
	ln     *net.UDPConn                    // where clients' packets arrive
	dialUp func() (*net.UDPConn, error)    // a new connected upstream socket
	done   chan struct{}                   // closed by close
	mu     sync.Mutex                      // guards the fields below
	delay  time.Duration                   // each way
	jitter time.Duration                   // ± uniformly around delay
	flows  map[netip.AddrPort]*net.UDPConn // client → its upstream socket
	closed bool

	up, down, dropped atomic.Int64 // packets passed each way; dropped (queue full)
}

// relayQueue is how many packets a direction of a flow may hold: more
// than the bandwidth-delay product of any transfer in these tests.
const relayQueue = 1 << 14

// newDelayRelay relays packets arriving on ln to upstream sockets made by
// dialUp, and their replies back, until close.
func newDelayRelay(ln *net.UDPConn, dialUp func() (*net.UDPConn, error)) *delayRelay {
	setRelayBuffers(ln)
	r := &delayRelay{ln: ln, dialUp: dialUp, done: make(chan struct{}), flows: map[netip.AddrPort]*net.UDPConn{}}
	go r.serve()
	return r
}

// installDelayRelay puts a delay relay on the path of every new UDP flow
// that enters ns on interface iif for port, towards target: an nft
// redirect to the relay's socket in ns. Flows already known to conntrack
// keep their way, so install it before the connectors start.
func installDelayRelay(t testing.TB, ns netns, iif string, port int, target string) *delayRelay {
	t.Helper()
	ln := ns.listenUDP(t, "0.0.0.0:0")
	up, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	r := newDelayRelay(ln, func() (c *net.UDPConn, err error) {
		err = ns.do(func() error {
			c, err = net.DialUDP("udp", nil, up)
			return err
		})
		return c, err
	})
	t.Cleanup(r.close)
	ns.nft(t, fmt.Sprintf(`
table ip delayrelay {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname %q udp dport %d redirect to :%d
	}
}
`, iif, port, ln.LocalAddr().(*net.UDPAddr).Port))
	return r
}

// relaySocketBuffer is the receive and send buffer of the relay's
// sockets. With the default (208 KiB, about 90 WireGuard packets) the
// kernel drops the tail of a TCP sender's burst before the relay reads it,
// and that loss, not the delay, would cap the tunnel's throughput.
// Linux caps it at net.core.rmem_max (4 MiB here).
const relaySocketBuffer = 4 << 20

func setRelayBuffers(c *net.UDPConn) {
	c.SetReadBuffer(relaySocketBuffer)
	c.SetWriteBuffer(relaySocketBuffer)
}

// udpReceiveDrops is the count of datagrams the kernel dropped in ns for
// want of socket buffer space (RcvbufErrors in /proc/net/snmp).
func udpReceiveDrops(t testing.TB, ns netns) int64 {
	t.Helper()
	lines := strings.Split(ns.exec(t, "cat", "/proc/net/snmp"), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "Udp:" || len(values) != len(names) {
			continue
		}
		for j, n := range names {
			if n == "RcvbufErrors" {
				v, _ := strconv.ParseInt(values[j], 10, 64)
				return v
			}
		}
	}
	t.Fatalf("no Udp RcvbufErrors in %s's /proc/net/snmp", ns)
	return 0
}

// setDelay sets the delay each way to base ± jitter, for packets that
// arrive from now on.
func (r *delayRelay) setDelay(base, jitter time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delay, r.jitter = base, jitter
}

func (r *delayRelay) sample() time.Duration {
	r.mu.Lock()
	d, j := r.delay, r.jitter
	r.mu.Unlock()
	if j > 0 {
		d += time.Duration(rand.Int64N(int64(2*j)+1)) - j
	}
	return max(d, 0)
}

func (r *delayRelay) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	close(r.done)
	r.ln.Close()
	for _, c := range r.flows {
		c.Close()
	}
}

// serve reads the clients' packets: one reader for all flows, as the
// ordering of each flow is that of this one socket.
func (r *delayRelay) serve() {
	buf := make([]byte, 1<<16)
	ups := map[netip.AddrPort]*delayLine{}
	for {
		n, from, err := r.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				continue // an ICMP error of an earlier send: the socket lives on
			}
			return
		}
		line := ups[from]
		if line == nil {
			up, err := r.dialUp()
			if err != nil {
				continue
			}
			setRelayBuffers(up)
			r.mu.Lock()
			if r.closed {
				r.mu.Unlock()
				up.Close()
				return
			}
			r.flows[from] = up
			r.mu.Unlock()
			line = r.newLine(func(b []byte) { up.Write(b) }, &r.up)
			ups[from] = line
			go r.replies(from, up)
		}
		line.push(buf[:n])
	}
}

// replies carries the upstream's packets back to the client from.
func (r *delayRelay) replies(from netip.AddrPort, up *net.UDPConn) {
	line := r.newLine(func(b []byte) { r.ln.WriteToUDPAddrPort(b, from) }, &r.down)
	buf := make([]byte, 1<<16)
	for {
		n, err := up.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		line.push(buf[:n])
	}
}

// delayLine is one direction of one flow: packets leave in the order they
// came, each at its arrival time plus a sampled delay, or right after the
// packet in front of it, whichever is later.
type delayLine struct {
	r     *delayRelay
	q     chan relayed
	last  time.Time // the departure time of the packet last pushed; only push uses it
	count *atomic.Int64
}

type relayed struct {
	at time.Time
	b  []byte
}

func (r *delayRelay) newLine(send func([]byte), count *atomic.Int64) *delayLine {
	l := &delayLine{r: r, q: make(chan relayed, relayQueue), count: count}
	go func() {
		for {
			select {
			case p := <-l.q:
				if d := time.Until(p.at); d > 0 {
					select {
					case <-time.After(d):
					case <-r.done:
						return
					}
				}
				send(p.b)
				l.count.Add(1)
			case <-r.done:
				return
			}
		}
	}()
	return l
}

// push queues a copy of b; a full queue drops it, as a router's would.
func (l *delayLine) push(b []byte) {
	at := time.Now().Add(l.r.sample())
	if at.Before(l.last) {
		at = l.last
	}
	l.last = at
	select {
	case l.q <- relayed{at: at, b: append([]byte(nil), b...)}:
	default:
		l.r.dropped.Add(1)
	}
}

// TestDelayRelay checks the relay on loopback: every packet arrives, in
// order, no sooner than the delay, and with delay 0 it passes packets
// straight on.
func TestDelayRelay(t *testing.T) {
	t.Parallel()
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := newDelayRelay(ln, func() (*net.UDPConn, error) {
		return net.DialUDP("udp", nil, echo.LocalAddr().(*net.UDPAddr))
	})
	defer r.close()

	// Two clients, so two flows, each with its own upstream socket.
	var clients [2]*net.UDPConn
	for i := range clients {
		c, err := net.DialUDP("udp", nil, ln.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	const base, jitter, packets = 30 * time.Millisecond, 10 * time.Millisecond, 200
	// roundTrips sends numbered packets carrying their send time and
	// checks that they all come back in order; it returns the shortest and
	// longest round trip.
	roundTrips := func(c *net.UDPConn) (lo, hi time.Duration) {
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

	r.setDelay(base, jitter)
	for i, c := range clients {
		lo, hi := roundTrips(c)
		t.Logf("client %d, %s ± %s each way: round trips %s to %s", i, base, jitter, lo.Round(time.Millisecond), hi.Round(time.Millisecond))
		if lo < 2*(base-jitter) {
			t.Errorf("client %d: a round trip took %s: want at least 2×(%s−%s)", i, lo, base, jitter)
		}
	}
	r.setDelay(0, 0)
	lo, hi := roundTrips(clients[0])
	t.Logf("pass-through: round trips %s to %s", lo.Round(time.Microsecond), hi.Round(time.Microsecond))
	if r.mu.Lock(); len(r.flows) != 2 {
		t.Errorf("%d upstream flows: want one per client (2)", len(r.flows))
	}
	r.mu.Unlock()
	if n := r.dropped.Load(); n != 0 {
		t.Errorf("%d packets dropped", n)
	}
}
