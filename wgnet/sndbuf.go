package wgnet

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	// trimInterval is how often trimSendBuffers runs. Each run lists
	// every endpoint of the stack (a fresh slice: 16 KB at a broker's
	// 1000 devices) and reads the congestion state of those with more
	// than trimFloor of buffer, so not more often than the fleet's memory
	// budget allows (bench/README.md); gVisor's auto-tuning does the
	// growing in between.
	trimInterval = time.Second
	// trimFloor is the least send buffer trimSendBuffers leaves: on a
	// lossy 300 ms path Reno sends some 40 KB/s, so even this is 0.4 s in
	// front of a new stream.
	trimFloor = 16 << 10
)

// trimSendBuffers shrinks each TCP connection's send buffer back to twice
// its congestion window. gVisor's auto-tuning grows a send buffer to that
// size as the window opens but never shrinks it, so a slow start that
// overshot a cellular carrier's queue, or a window cut by loss, left a
// buffer of several round trips' worth of data queued in front of every
// new stream (all of a device's streams share one connection). Linux bounds
// the same queue with TCP_NOTSENT_LOWAT; gVisor has none. Data already
// queued stays; writers wait until the connection drains below half of
// the new size, as gVisor's auto-tuning has them do anyway.
func (t *netTun) trimSendBuffers() {
	for _, te := range t.stack.RegisteredEndpoints() {
		ep, ok := te.(*tcp.Endpoint)
		if !ok {
			continue
		}
		ops := ep.SocketOptions()
		cur := ops.GetSendBufferSize()
		if cur <= trimFloor {
			continue
		}
		var info tcpip.TCPInfoOption
		if ep.GetSockOpt(&info) != nil || info.State != tcpip.EndpointState(tcp.StateEstablished) {
			continue
		}
		// Not during loss recovery, whose window is briefly a packet or
		// two: the buffer holds what is to be resent, and the window
		// comes back to the slow-start threshold within a few round trips.
		if info.CcState != tcpip.Open {
			continue
		}
		window := int64(info.SndCwnd)
		if info.SndSsthresh < 1<<20 { // not the "none yet" of a first slow start
			window = max(window, int64(info.SndSsthresh))
		}
		want := max(2*window*int64(t.mtu), trimFloor)
		if want < cur-cur/4 {
			// notify false: a size set with notify turns auto-tuning off
			// for good, and it should keep growing the buffer with the
			// window.
			ops.SetSendBufferSize(want, false)
		}
	}
}

// notsentTime bounds, in time at the connection's current rate, the data a
// connection of the stack keeps queued but not yet sent, so that a stream's
// frame written now waits at most about this long behind the others' before
// it leaves (all of a device's streams share one connection). It is what
// TCP_NOTSENT_LOWAT does for the kernel's senders; gVisor has no such option.
// With gVisor's own sizing (twice the congestion window) as much as one
// window waits unsent: a round trip, 0.3 s and more on a 300 ms cellular path.
const notsentTime = 50 * time.Millisecond

// boundedConn is a TCP connection of the stack whose writes keep its send
// buffer at what may be in flight plus notsentTime of data. Reads, closes,
// CloseWrite and addresses are gonet's.
//
// The bound is a buffer size, because the stack tells how full the buffer is
// only by refusing a write: Write sets the size and writes what fits. gVisor
// wakes a blocked writer only once the buffer is half empty, which with a
// buffer little larger than the flight would leave the path idle, so Write
// also polls while the buffer is full, every tenth of a round trip.
//
// What may be in flight is the congestion window or the receiver's window,
// the smaller: gVisor's Reno grows its congestion window whatever limits
// the flight, to megabytes on a long path to a receiver of 1 MiB. The
// receiver's window is not among the endpoint's options; the stack's TCP
// probe (netTun.probe) copies it from every segment received.
//
// The rate is the window over gVisor's smoothed RTT, which lags a path that
// slowed under a connection with a large window (it weighs each sample by
// one over the packets in flight): there the bound is looser, up to
// gVisor's own size. Measuring the acknowledged rate instead, with
// auto-tuning off, did no better in make bench-field (bench/README.md).
type boundedConn struct {
	*gonet.TCPConn
	ep     *tcp.Endpoint
	wq     *waiter.Queue
	mss    int64
	peer   atomic.Int64 // the receiver's window, bytes; 0: none seen yet
	wdl    atomic.Int64 // write deadline, unix nanoseconds; 0: none
	closed func()       // drops the conn from netTun.conns

	mu   sync.Mutex // serializes Write, as net.Conn allows concurrent calls
	last time.Time  // when Write last sized the buffer
}

func (t *netTun) newBoundedConn(wq *waiter.Queue, ep tcpip.Endpoint) net.Conn {
	gc := gonet.NewTCPConn(wq, ep)
	te, ok := ep.(*tcp.Endpoint)
	if !ok {
		return gc
	}
	// An MSS estimate from the MTU (IPv4 and TCP headers with timestamps):
	// the size is a bound, not an exact fit.
	c := &boundedConn{TCPConn: gc, ep: te, wq: wq, mss: int64(t.mtu - 52)}
	id := tcp.TCPEndpointID(te.Info().(*stack.TransportEndpointInfo).ID)
	t.conns.Store(id, c)
	c.closed = func() { t.conns.CompareAndDelete(id, c) }
	return c
}

// probe is the stack's TCP probe, called with a copy of an endpoint's
// state on every segment it receives: it keeps the receiver's window of
// the boundedConns.
func (t *netTun) probe(s *tcp.TCPEndpointState) {
	if c, ok := t.conns.Load(s.ID); ok {
		c.(*boundedConn).peer.Store(int64(s.Sender.SndWnd))
	}
}

// Close closes the connection.
func (c *boundedConn) Close() error {
	c.closed()
	return c.TCPConn.Close()
}

// resize sets the send buffer to what may be in flight plus notsentTime of
// data at that rate (at least trimFloor, at most as much again: gVisor's
// own size is twice the window), and returns how long to wait before
// polling a full buffer again. On a short path (a round trip under
// notsentTime) the bound is a whole window, so nothing changes there.
func (c *boundedConn) resize(now time.Time) time.Duration {
	c.last = now
	var info tcpip.TCPInfoOption
	if c.ep.GetSockOpt(&info) != nil || info.RTT <= 0 || info.State != tcpip.EndpointState(tcp.StateEstablished) {
		return 10 * time.Millisecond
	}
	window := int64(info.SndCwnd) * c.mss
	if p := c.peer.Load(); p > 0 {
		window = min(window, p)
	}
	extra := window
	if info.RTT > notsentTime {
		extra = window * int64(notsentTime) / int64(info.RTT)
	}
	want := window + max(extra, trimFloor)
	if ops := c.ep.SocketOptions(); ops.GetSendBufferSize() != want {
		// notify false: gVisor's auto-tuning stays on for the moments
		// between two writes; the next Write corrects what it grows.
		ops.SetSendBufferSize(want, false)
	}
	return min(max(info.RTT/10, 2*time.Millisecond), 20*time.Millisecond)
}

// Write writes all of b, waiting while the bound leaves no room.
func (c *boundedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	poll := 10 * time.Millisecond
	if now := time.Now(); now.Sub(c.last) >= 5*time.Millisecond {
		poll = c.resize(now)
	}
	var (
		r      bytes.Reader
		n      int
		notify <-chan struct{}
		timer  *time.Timer
	)
	for n < len(b) {
		if d := c.wdl.Load(); d != 0 && time.Now().UnixNano() >= d {
			return n, c.opError(os.ErrDeadlineExceeded)
		}
		r.Reset(b[n:])
		m, err := c.ep.Write(&r, tcpip.WriteOptions{})
		n += int(m)
		switch err.(type) {
		case nil:
			continue
		case *tcpip.ErrWouldBlock:
		default:
			return n, c.opError(errors.New(err.String()))
		}
		if notify == nil {
			// Registered before waiting, then one more try, so that room
			// made in between is not missed (as gonet does).
			var entry waiter.Entry
			entry, notify = waiter.NewChannelEntry(waiter.WritableEvents)
			c.wq.EventRegister(&entry)
			defer c.wq.EventUnregister(&entry)
			timer = time.NewTimer(poll)
			defer timer.Stop()
			continue
		}
		wait := poll
		if d := c.wdl.Load(); d != 0 {
			wait = min(wait, time.Until(time.Unix(0, d)))
		}
		timer.Reset(max(wait, 0))
		select {
		case <-notify:
		case <-timer.C:
		}
		poll = c.resize(time.Now())
	}
	return n, nil
}

func (c *boundedConn) opError(err error) error {
	return &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// SetDeadline sets both deadlines; Write honours the write deadline itself.
func (c *boundedConn) SetDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.TCPConn.SetDeadline(t)
}

// SetWriteDeadline sets the deadline for Write.
func (c *boundedConn) SetWriteDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.TCPConn.SetWriteDeadline(t)
}

func (c *boundedConn) setWriteDeadline(t time.Time) {
	if t.IsZero() {
		c.wdl.Store(0)
	} else {
		c.wdl.Store(t.UnixNano())
	}
}

// dialTCP is gonet.DialContextTCP with a boundedConn for the connection.
func (t *netTun) dialTCP(ctx context.Context, addr tcpip.FullAddress, proto tcpip.NetworkProtocolNumber) (net.Conn, error) {
	var wq waiter.Queue
	ep, terr := t.stack.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, errors.New(terr.String())
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(addr)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "connect", Net: "tcp", Err: errors.New(terr.String())}
	}
	return t.newBoundedConn(&wq, ep), nil
}

// listenTCP is gonet.ListenTCP whose connections are boundedConns.
func (t *netTun) listenTCP(addr tcpip.FullAddress, proto tcpip.NetworkProtocolNumber) (net.Listener, error) {
	l := &boundedListener{t: t, wq: new(waiter.Queue), done: make(chan struct{})}
	ep, terr := t.stack.NewEndpoint(tcp.ProtocolNumber, proto, l.wq)
	if terr != nil {
		return nil, errors.New(terr.String())
	}
	if terr := ep.Bind(addr); terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "bind", Net: "tcp", Err: errors.New(terr.String())}
	}
	if terr := ep.Listen(4096); terr != nil { // gonet's backlog, Linux's somaxconn
		ep.Close()
		return nil, &net.OpError{Op: "listen", Net: "tcp", Err: errors.New(terr.String())}
	}
	l.ep = ep
	return l, nil
}

// boundedListener is gonet.TCPListener whose connections are boundedConns.
type boundedListener struct {
	t         *netTun
	ep        tcpip.Endpoint
	wq        *waiter.Queue
	done      chan struct{}
	closeOnce sync.Once
}

func (l *boundedListener) Accept() (net.Conn, error) {
	ep, wq, terr := l.ep.Accept(nil)
	if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
		entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
		l.wq.EventRegister(&entry)
		defer l.wq.EventUnregister(&entry)
		for {
			if ep, wq, terr = l.ep.Accept(nil); terr == nil {
				break
			} else if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
				break
			}
			select {
			case <-l.done:
				return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
			case <-notify:
			}
		}
	}
	if terr != nil {
		err := errors.New(terr.String())
		select {
		case <-l.done:
			err = net.ErrClosed // as net's listeners say it, which callers test for
		default:
		}
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: err}
	}
	return l.t.newBoundedConn(wq, ep), nil
}

func (l *boundedListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.ep.Close()
	})
	return nil
}

func (l *boundedListener) Addr() net.Addr {
	a, err := l.ep.GetLocalAddress()
	if err != nil {
		return nil
	}
	return &net.TCPAddr{IP: net.IP(a.Addr.AsSlice()), Port: int(a.Port)}
}
