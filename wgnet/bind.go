package wgnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"
)

// addrBind is a conn.Bind on one UDP socket bound to one local address.
// wireguard-go's StdNetBind always listens on the wildcard address for IPv4
// and IPv6 (pitfall 2), which a host with several uplinks, or a broker that
// must answer from its public address only, cannot use.
//
// It moves up to conn.IdealBatchSize datagrams per system call with
// recvmmsg/sendmmsg (x/net's ReadBatch/WriteBatch; one datagram per call on
// systems without them). Unlike StdNetBind it does not use UDP GSO/GRO or
// sticky source addresses: with one bound address there is no source to
// choose.
type addrBind struct {
	addr netip.Addr

	mu   sync.Mutex   // guards conn and pc
	conn *net.UDPConn // nil while closed
	pc   batchConn

	msgs sync.Pool // *[]ipv6.Message of conn.IdealBatchSize
}

// socketBuffer is the UDP socket's kernel buffer size in each direction,
// wireguard-go's choice (conn.socketBufferSize).
const socketBuffer = 7 << 20

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common;
// ipv4.Message and ipv6.Message are both aliases of the same type.
type batchConn interface {
	ReadBatch(ms []ipv6.Message, flags int) (int, error)
	WriteBatch(ms []ipv6.Message, flags int) (int, error)
}

var _ conn.Bind = (*addrBind)(nil)

func newAddrBind(addr netip.Addr) *addrBind {
	b := &addrBind{addr: addr.Unmap()}
	b.msgs.New = func() any {
		msgs := make([]ipv6.Message, conn.IdealBatchSize)
		for i := range msgs {
			msgs[i].Buffers = make(net.Buffers, 1)
		}
		return &msgs
	}
	return b
}

// addrEndpoint is a peer's UDP address. It keeps the *net.UDPAddr that
// ReadBatch allocated anyway, so that sending to it needs no conversion.
type addrEndpoint struct {
	ap netip.AddrPort
	ua *net.UDPAddr
}

var _ conn.Endpoint = (*addrEndpoint)(nil)

func newAddrEndpoint(ap netip.AddrPort) *addrEndpoint {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return &addrEndpoint{ap: ap, ua: net.UDPAddrFromAddrPort(ap)}
}

func (e *addrEndpoint) ClearSrc()           {}
func (e *addrEndpoint) SrcToString() string { return "" }
func (e *addrEndpoint) DstToString() string { return e.ap.String() }
func (e *addrEndpoint) DstIP() netip.Addr   { return e.ap.Addr() }
func (e *addrEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }
func (e *addrEndpoint) DstToBytes() []byte {
	b, _ := e.ap.MarshalBinary()
	return b
}

func (b *addrBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	network := "udp4"
	if b.addr.Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.addr, port)))
	if err != nil {
		return nil, 0, err
	}
	setSocketBuffers(c)
	var pc batchConn
	if b.addr.Is6() {
		pc = ipv6.NewPacketConn(c)
	} else {
		pc = ipv4.NewPacketConn(c)
	}
	b.conn, b.pc = c, pc
	// The function keeps its own pc: after Close and a new Open it must keep
	// failing with net.ErrClosed rather than read from the new socket.
	recv := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		return b.receive(pc, bufs, sizes, eps)
	}
	return []conn.ReceiveFunc{recv}, uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
}

func (b *addrBind) receive(pc batchConn, bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	msgs := b.msgs.Get().(*[]ipv6.Message)
	defer b.msgs.Put(msgs)
	ms := (*msgs)[:min(len(bufs), len(*msgs))]
	for i := range ms {
		ms[i].Buffers[0] = bufs[i]
	}
	n, err := pc.ReadBatch(ms, 0)
	if err != nil {
		return 0, err
	}
	for i := range ms[:n] {
		sizes[i] = ms[i].N
		if ua, ok := ms[i].Addr.(*net.UDPAddr); ok && ms[i].N > 0 {
			// Unmap: x/net may hand back an IPv4 source in 16-byte form.
			ap := ua.AddrPort()
			eps[i] = &addrEndpoint{ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ua: ua}
		} else {
			sizes[i] = 0
		}
	}
	for i := range ms {
		ms[i] = ipv6.Message{Buffers: ms[i].Buffers} // drop references to bufs and addresses
	}
	return n, nil
}

func (b *addrBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*addrEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	if e.ap.Addr().Is6() != b.addr.Is6() {
		return fmt.Errorf("send to %s from %s: %w", e.ap, b.addr, syscall.EAFNOSUPPORT)
	}
	b.mu.Lock()
	pc := b.pc
	b.mu.Unlock()
	if pc == nil {
		return net.ErrClosed
	}
	msgs := b.msgs.Get().(*[]ipv6.Message)
	defer b.msgs.Put(msgs)
	for len(bufs) > 0 {
		ms := (*msgs)[:min(len(bufs), len(*msgs))]
		for i := range ms {
			ms[i].Buffers[0] = bufs[i]
			ms[i].Addr = e.ua
		}
		// WriteBatch may send fewer than asked without an error.
		n, err := pc.WriteBatch(ms, 0)
		for i := range ms {
			ms[i] = ipv6.Message{Buffers: ms[i].Buffers}
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("send: no datagram written")
		}
		bufs = bufs[n:]
	}
	return nil
}

func (b *addrBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return nil
	}
	err := b.conn.Close()
	b.conn, b.pc = nil, nil
	return err
}

func (b *addrBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return newAddrEndpoint(ap), nil
}

// SetMark is a no-op: fwmark is for policy routing of a kernel interface's
// own traffic, which a userspace device on one bound address does not need.
func (b *addrBind) SetMark(uint32) error { return nil }

func (b *addrBind) BatchSize() int { return conn.IdealBatchSize }
