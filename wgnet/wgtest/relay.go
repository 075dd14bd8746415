package wgtest

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Relay is a UDP relay to put on the path between a WireGuard device and
// its peer, a stand-in for netem, which this kernel lacks. Each way it
// holds every packet for a delay of base ± uniform jitter, drops a share
// of them (loss), or drops all of them while a blackout lasts (a roam, a
// dead cell, a carrier NAT that forgot the mapping). All of these can
// change while traffic flows; at their zero values it passes packets
// straight on.
//
// A packet never leaves before the one in front of it: its departure is
// its arrival plus a sampled delay, or the departure of the packet before
// it, whichever is later. netem's jitter reorders packets, which no
// cellular path does (its jitter comes from queueing), and a TCP sender
// takes reordering for loss, so that the relay would measure its own
// artefact rather than the delay.
//
// Each client address gets an upstream socket of its own, so the peer
// sees one endpoint per client, as behind a NAT. The relay makes the
// upstream sockets with the dial func it was given, so that a test can
// open them where it needs them (in a network namespace, say).
type Relay struct {
	ln   *net.UDPConn                 // where clients' packets arrive
	dial func() (*net.UDPConn, error) // a new upstream socket, connected to the peer
	done chan struct{}                // closed by Close: stops the delay lines

	mu     sync.Mutex // guards the fields below
	delay  time.Duration
	jitter time.Duration
	flows  map[netip.AddrPort]*net.UDPConn // client → its upstream socket
	closed bool

	loss     atomic.Uint64 // packets dropped on purpose, per 2^32
	blackout atomic.Bool

	up, down, dropped, overflowed atomic.Int64
}

// RelayCounters counts the packets a Relay has handled.
type RelayCounters struct {
	Up         int64 // passed on from a client to its upstream
	Down       int64 // passed on from an upstream back to its client
	Dropped    int64 // dropped on purpose: loss, blackout
	Overflowed int64 // dropped for want of queue (RelayQueue)
}

// RelayQueue is how many packets each direction of a flow may hold: more
// than the bandwidth-delay product of any path the tests build. A packet
// arriving at a full queue is dropped, as a router's would be, and counted
// as Overflowed.
const RelayQueue = 1 << 14

// RelaySocketBuffer is the receive and send buffer of the relay's sockets.
// With Linux's default (208 KiB, about 90 WireGuard packets) the kernel
// drops the tail of a TCP sender's burst before the relay reads it, and
// that loss, not the delay, would cap the tunnel's throughput. Linux caps
// it at net.core.rmem_max and wmem_max.
const RelaySocketBuffer = 4 << 20

// NewRelay relays the packets arriving on ln, each client's through an
// upstream socket of its own made by dial, and the replies back, until
// Close. The relay owns ln and the upstream sockets.
func NewRelay(ln *net.UDPConn, dial func() (*net.UDPConn, error)) *Relay {
	setBuffers(ln)
	r := &Relay{ln: ln, dial: dial, done: make(chan struct{}), flows: map[netip.AddrPort]*net.UDPConn{}}
	go r.serve()
	return r
}

func setBuffers(c *net.UDPConn) {
	c.SetReadBuffer(RelaySocketBuffer)
	c.SetWriteBuffer(RelaySocketBuffer)
}

// Addr is where clients send their packets: ln's address.
func (r *Relay) Addr() netip.AddrPort {
	return r.ln.LocalAddr().(*net.UDPAddr).AddrPort()
}

// SetDelay sets the delay each way to base ± jitter (uniform), for
// packets that arrive from now on.
func (r *Relay) SetDelay(base, jitter time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delay, r.jitter = base, jitter
}

// SetLoss sets the share of packets dropped each way, from 0 to 1.
func (r *Relay) SetLoss(fraction float64) {
	r.loss.Store(uint64(min(max(fraction, 0), 1) * (1 << 32)))
}

// SetBlackout drops every packet arriving either way while on is true.
// Packets already queued for their delay still leave.
func (r *Relay) SetBlackout(on bool) { r.blackout.Store(on) }

// Counters returns the counts of packets so far.
func (r *Relay) Counters() RelayCounters {
	return RelayCounters{Up: r.up.Load(), Down: r.down.Load(), Dropped: r.dropped.Load(), Overflowed: r.overflowed.Load()}
}

// Close stops the relay and closes its sockets; packets still queued are
// lost.
func (r *Relay) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	close(r.done)
	for _, c := range r.flows {
		c.Close()
	}
	return r.ln.Close()
}

func (r *Relay) sample() time.Duration {
	r.mu.Lock()
	d, j := r.delay, r.jitter
	r.mu.Unlock()
	if j > 0 {
		d += time.Duration(rand.Int64N(int64(2*j)+1)) - j
	}
	return max(d, 0)
}

// serve reads the clients' packets: one reader for all flows, so that
// each flow keeps the order in which this one socket received it.
func (r *Relay) serve() {
	buf := make([]byte, 1<<16)
	lines := map[netip.AddrPort]*delayLine{} // client → its upward line
	for {
		n, from, err := r.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // an ICMP error of an earlier send: the socket lives on
		}
		l := lines[from]
		if l == nil {
			up, err := r.dial()
			if err != nil {
				continue // the packet is lost; the client's next one tries again
			}
			setBuffers(up)
			r.mu.Lock()
			if r.closed {
				r.mu.Unlock()
				up.Close()
				return
			}
			r.flows[from] = up
			r.mu.Unlock()
			l = r.newLine(func(b []byte) { up.Write(b) }, &r.up)
			lines[from] = l
			go r.replies(from, up)
		}
		l.push(buf[:n])
	}
}

// replies carries the packets arriving on up back to the client from.
func (r *Relay) replies(from netip.AddrPort, up *net.UDPConn) {
	l := r.newLine(func(b []byte) { r.ln.WriteToUDPAddrPort(b, from) }, &r.down)
	buf := make([]byte, 1<<16)
	for {
		n, err := up.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // an ICMP error (the peer's port closed): it may come back
		}
		l.push(buf[:n])
	}
}

// delayLine is one direction of one flow: a queue whose packets leave in
// the order they came, each at its departure time.
type delayLine struct {
	r      *Relay
	q      chan packet
	last   time.Time     // the departure of the packet last queued; only push uses it
	passed *atomic.Int64 // counts the packets sent
}

type packet struct {
	at time.Time // departure
	b  []byte
}

func (r *Relay) newLine(send func([]byte), passed *atomic.Int64) *delayLine {
	l := &delayLine{r: r, q: make(chan packet, RelayQueue), passed: passed}
	go func() {
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		for {
			select {
			case p := <-l.q:
				if d := time.Until(p.at); d > 0 {
					timer.Reset(d)
					select {
					case <-timer.C:
					case <-r.done:
						return
					}
				}
				send(p.b)
				l.passed.Add(1)
			case <-r.done:
				return
			}
		}
	}()
	return l
}

// push queues a copy of b, unless it is lost or the queue is full.
func (l *delayLine) push(b []byte) {
	r := l.r
	if r.blackout.Load() {
		r.dropped.Add(1)
		return
	}
	if loss := r.loss.Load(); loss > 0 && uint64(rand.Uint32()) < loss {
		r.dropped.Add(1)
		return
	}
	at := time.Now().Add(r.sample())
	if at.Before(l.last) {
		at = l.last
	}
	select {
	case l.q <- packet{at: at, b: bytes.Clone(b)}:
		l.last = at
	default:
		r.overflowed.Add(1)
	}
}
