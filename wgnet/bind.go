package wgnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
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
// systems without them) and, where the kernel offers them, like StdNetBind,
// UDP GSO on send and GRO on receive (bind_linux.go): a batch of a busy
// stream's datagrams to one peer then crosses the kernel as up to 64 at a
// time rather than one by one. On loopback that cut the system calls' share
// of a stream's CPU from a third to under a tenth.
// Unlike StdNetBind it does not use sticky source addresses: with one bound
// address there is no source to choose.
type addrBind struct {
	addr netip.Addr

	mu   sync.Mutex   // guards conn and pc
	conn *net.UDPConn // nil while closed
	pc   batchConn
	// tx says whether Send may use UDP GSO on pc. It is set at Open, and
	// cleared for good if the kernel refuses GSO on our route.
	tx atomic.Bool

	msgs  sync.Pool // *[]ipv6.Message of conn.IdealBatchSize
	batch int       // BatchSize: at most conn.IdealBatchSize

	// in counts the data packets received into wireguard-go, out those it
	// sends; nil unless Config.SmallDevice (see packetGate).
	in, out *packetGate
}

const (
	// udpSegmentMaxDatagrams is the kernel's limit on datagrams per GSO
	// buffer (UDP_MAX_SEGMENTS); a GRO buffer holds no more either.
	udpSegmentMaxDatagrams = 64
	// maxIPv4PayloadLen and maxIPv6PayloadLen are the most UDP payload one
	// GSO buffer may carry: the IP length field less the headers it counts.
	maxIPv4PayloadLen = 1<<16 - 1 - 20 - 8
	maxIPv6PayloadLen = 1<<16 - 1 - 8
)

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

// newAddrBind makes a bind on addr that moves up to batch datagrams at a
// time (at most conn.IdealBatchSize).
func newAddrBind(addr netip.Addr, batch int) *addrBind {
	b := &addrBind{addr: addr.Unmap(), batch: min(batch, conn.IdealBatchSize)}
	b.msgs.New = func() any {
		msgs := make([]ipv6.Message, conn.IdealBatchSize)
		for i := range msgs {
			// Buffers is set per call, to slices of the caller's bufs.
			if gsoControlSize > 0 {
				msgs[i].OOB = make([]byte, 0, gsoControlSize)
			}
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
	tx, rx := enableUDPOffload(c)
	b.conn, b.pc = c, pc
	b.tx.Store(tx)
	// The function keeps its own pc: after Close and a new Open it must keep
	// failing with net.ErrClosed rather than read from the new socket. It is
	// only ever called from one goroutine, so st needs no lock.
	st := &receiveState{rx: rx}
	recv := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		return b.receive(pc, st, bufs, sizes, eps)
	}
	return []conn.ReceiveFunc{recv}, uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
}

// narrowReads is how many reads stay narrow after one that had coalesced
// datagrams in it, so that a stream's occasional lone datagram does not
// make the next read a wide one that overflows (see receive).
const narrowReads = 16

// receiveState is what one ReceiveFunc keeps between calls.
type receiveState struct {
	rx   bool          // UDP GRO is on
	last *addrEndpoint // the endpoint of the last datagram

	// narrow counts down the reads that are to read few messages (see
	// receive): it is reset whenever a read had coalesced datagrams in it.
	narrow int

	// Datagrams read but not yet returned, because the batch was full:
	// their bytes one after another, and each one's size and source; those
	// from stashNext (at byte stashOff) on are still to be returned. Emptied
	// once all are returned, but kept for the next overflow unless larger
	// than stashKeep: with a small device's batch of 16, every GRO train of
	// a busy stream overflows, and a stash grown afresh for each was most of
	// the connector's allocation (and so its GC) under a download.
	stash      []byte
	stashSizes []int
	stashAddrs []net.Addr
	stashNext  int
	stashOff   int
}

// stashKeep is the most stash bytes kept between overflows: one GRO read,
// which is all a read overflows by while a stream keeps reads narrow (and
// at most udpSegmentMaxDatagrams sizes and sources).
const stashKeep = 1 << 16

// receive reads a batch of datagrams.
//
// With GRO on, the kernel may hand over up to udpSegmentMaxDatagrams
// datagrams as one message (wireguard-go's buffers are 64 KiB, enough for
// any), so a read of k messages can yield 64k datagrams. Like StdNetBind, it
// reads into the last k of bufs and splits what it read into bufs from the
// start. StdNetBind always reads 2 messages into 128 buffers, so that
// nothing can overflow; but where datagrams arrive one by one (a broker's
// many peers, or any flow on loopback without GSO) that is 2 datagrams per
// system call instead of up to 128. So this reads len(bufs)/4 messages
// unless one of the last narrowReads reads had coalesced ones in it, and in
// the rare batch that then overflows, keeps the excess datagrams for the
// next call.
func (b *addrBind) receive(pc batchConn, st *receiveState, bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	b.in.wait()
	n, err := b.receiveBatch(pc, st, bufs, sizes, eps)
	if b.in != nil {
		data := 0
		for i := range n {
			if isTransportData(bufs[i][:sizes[i]]) {
				data++
			}
		}
		b.in.enter(data)
	}
	return n, err
}

// isTransportData reports whether a WireGuard message carries a packet:
// a transport data message (type 4) longer than an empty keepalive's
// 16-byte header and 16-byte tag. Only those reach the tun's Write.
func isTransportData(msg []byte) bool {
	return len(msg) > 32 && msg[0] == 4
}

func (b *addrBind) receiveBatch(pc batchConn, st *receiveState, bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	if len(st.stashSizes) > 0 {
		return st.unstash(bufs, sizes, eps), nil
	}
	msgs := b.msgs.Get().(*[]ipv6.Message)
	defer b.msgs.Put(msgs)
	ms := (*msgs)[:min(len(bufs), len(*msgs))]
	for i := range ms {
		ms[i].Buffers = bufs[i : i+1 : i+1]
		ms[i].OOB = ms[i].OOB[:cap(ms[i].OOB)]
	}
	defer resetMessages(ms)
	var n int
	if st.rx {
		k := len(ms) / 4
		if st.narrow > 0 {
			k = len(ms) / udpSegmentMaxDatagrams
			st.narrow--
		}
		readAt := len(ms) - max(1, k)
		read, err := pc.ReadBatch(ms[readAt:], 0)
		if err != nil {
			return 0, err
		}
		if n, err = st.split(ms, readAt, read); err != nil {
			return 0, err
		}
	} else {
		var err error
		if n, err = pc.ReadBatch(ms, 0); err != nil {
			return 0, err
		}
	}
	for i := range ms[:n] {
		sizes[i] = ms[i].N
		eps[i] = st.endpoint(ms[i].Addr)
		if eps[i] == nil {
			sizes[i] = 0
		}
	}
	return n, nil
}

// endpoint returns the endpoint for a datagram from a, nil if a is not a
// UDP address.
func (st *receiveState) endpoint(a net.Addr) conn.Endpoint {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return nil
	}
	// Unmap: x/net may hand back an IPv4 source in 16-byte form.
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	// A busy peer's datagrams all come from one address: reuse its
	// endpoint (they are immutable) rather than allocate one each.
	if st.last == nil || st.last.ap != ap {
		st.last = &addrEndpoint{ap: ap, ua: ua}
	}
	return st.last
}

// split splits the read datagrams in ms[readAt:readAt+read], which may each
// be several coalesced by GRO, into single datagrams in ms from the start,
// and returns how many there are. Those that do not fit go to the stash.
// Adapted from wireguard-go's conn.splitCoalescedMessages (MIT, see
// bind_linux.go).
func (st *receiveState) split(ms []ipv6.Message, readAt, read int) (int, error) {
	n := 0
	for i := readAt; i < readAt+read; i++ {
		msg := &ms[i]
		size, err := getGSOSize(msg.OOB[:msg.NN])
		if err != nil {
			return 0, err
		}
		if size == 0 || size >= msg.N {
			size = max(msg.N, 1)
		} else {
			st.narrow = narrowReads
		}
		src := msg.Buffers[0][:msg.N]
		for start := 0; start < len(src); start += size {
			seg := src[start:min(start+size, len(src))]
			// Writing into ms[n] may not overwrite a message not split
			// yet; nor may a datagram overtake stashed ones.
			if n > i || len(st.stashSizes) > 0 {
				if st.stash == nil {
					st.stash = make([]byte, 0, stashKeep)
					st.stashSizes = make([]int, 0, udpSegmentMaxDatagrams)
					st.stashAddrs = make([]net.Addr, 0, udpSegmentMaxDatagrams)
				}
				st.stash = append(st.stash, seg...)
				st.stashSizes = append(st.stashSizes, len(seg))
				st.stashAddrs = append(st.stashAddrs, msg.Addr)
				continue
			}
			// copy is memmove: when n == i, source and destination overlap
			// in the same buffer, the destination first.
			ms[n].N = copy(ms[n].Buffers[0], seg)
			ms[n].Addr = msg.Addr
			n++
		}
	}
	return n, nil
}

// unstash returns stashed datagrams, as many as fit in bufs.
func (st *receiveState) unstash(bufs [][]byte, sizes []int, eps []conn.Endpoint) int {
	n := min(len(bufs), len(st.stashSizes)-st.stashNext)
	for i := range n {
		size := st.stashSizes[st.stashNext]
		sizes[i] = copy(bufs[i], st.stash[st.stashOff:st.stashOff+size])
		st.stashOff += size
		eps[i] = st.endpoint(st.stashAddrs[st.stashNext])
		if eps[i] == nil {
			sizes[i] = 0
		}
		st.stashNext++
	}
	if st.stashNext == len(st.stashSizes) {
		clear(st.stashAddrs)
		if cap(st.stash) > stashKeep || cap(st.stashSizes) > udpSegmentMaxDatagrams {
			st.stash, st.stashSizes, st.stashAddrs = nil, nil, nil
		} else {
			st.stash, st.stashSizes, st.stashAddrs = st.stash[:0], st.stashSizes[:0], st.stashAddrs[:0]
		}
		st.stashNext, st.stashOff = 0, 0
	}
	return n
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
	// Sent or not, wireguard-go is done with these buffers.
	defer b.out.leave(len(bufs))
	msgs := b.msgs.Get().(*[]ipv6.Message)
	defer b.msgs.Put(msgs)
	if len(bufs) > 1 && b.tx.Load() {
		err := b.sendCoalesced(pc, *msgs, bufs, e)
		if err == nil {
			return nil
		}
		// The kernel refused the GSO buffer. A path MTU below a datagram
		// (EINVAL) refuses only these; a route without checksum offload
		// (EIO) refuses GSO for good. Either way, send them one by one
		// (the receiver's replay window drops any that went out twice).
		if shouldDisableGSO(err) {
			b.tx.Store(false)
		}
	}
	return b.sendEach(pc, *msgs, bufs, e)
}

// sendEach sends bufs to e one datagram each.
func (b *addrBind) sendEach(pc batchConn, msgs []ipv6.Message, bufs [][]byte, e *addrEndpoint) error {
	for len(bufs) > 0 {
		ms := msgs[:min(len(bufs), len(msgs))]
		for i := range ms {
			ms[i].Buffers = bufs[i : i+1 : i+1]
			ms[i].Addr = e.ua
		}
		err := writeAll(pc, ms)
		if err != nil {
			return err
		}
		bufs = bufs[len(ms):]
	}
	return nil
}

// sendCoalesced sends bufs to e with UDP GSO: each run of consecutive
// datagrams of one size (the last of a run may be shorter) goes as one
// message whose iovecs are the datagrams, which the kernel cuts apart
// again. Unlike wireguard-go's conn.coalesceMessages, from which the rules
// come (MIT, see bind_linux.go), it copies nothing: appending the run to the
// first datagram's 64 KiB buffer would make every pooled buffer resident.
func (b *addrBind) sendCoalesced(pc batchConn, msgs []ipv6.Message, bufs [][]byte, e *addrEndpoint) error {
	maxPayload := maxIPv4PayloadLen
	if b.addr.Is6() {
		maxPayload = maxIPv6PayloadLen
	}
	for len(bufs) > 0 {
		var (
			n        int  // messages used
			start    int  // index in bufs of the run's first datagram
			gsoSize  int  // segment size of the run
			payload  int  // bytes in the run
			endBatch bool // the run takes no more
		)
		flush := func(end int) {
			m := &msgs[n]
			m.Buffers = bufs[start:end:end]
			m.Addr = e.ua
			if end-start > 1 {
				setGSOSize(&m.OOB, uint16(gsoSize))
			}
			n++
		}
		i := 0
		for ; i < len(bufs); i++ {
			l := len(bufs[i])
			if i > start && !endBatch && i-start < udpSegmentMaxDatagrams &&
				l <= gsoSize && payload+l <= maxPayload {
				payload += l
				endBatch = l < gsoSize // a short datagram ends a run
				continue
			}
			if i > start {
				flush(i)
				if n == len(msgs) {
					break
				}
			}
			start, gsoSize, payload, endBatch = i, l, l, false
		}
		if n < len(msgs) {
			flush(i)
		}
		err := writeAll(pc, msgs[:n])
		if err != nil {
			return err
		}
		bufs = bufs[i:]
	}
	return nil
}

// writeAll writes all of ms, WriteBatch being free to write fewer than asked
// without an error, and resets them afterwards.
func writeAll(pc batchConn, ms []ipv6.Message) error {
	defer resetMessages(ms)
	for sent := 0; sent < len(ms); {
		n, err := pc.WriteBatch(ms[sent:], 0)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("send: no datagram written")
		}
		sent += n
	}
	return nil
}

// resetMessages drops ms's references to buffers and addresses, keeping
// their control message buffers.
func resetMessages(ms []ipv6.Message) {
	for i := range ms {
		ms[i] = ipv6.Message{OOB: ms[i].OOB[:0]}
	}
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

func (b *addrBind) BatchSize() int { return b.batch }

// dualBind is the small device's bind on all addresses: an addrBind on
// 0.0.0.0 and one on :: (IPv6 only), on one port, like StdNetBind's two
// sockets, but with our batch size. StdNetBind's receive assumes batches
// of conn.IdealBatchSize, and wireguard-go keeps a 64 KiB buffer per
// datagram of a batch for each receive socket: 16 MiB for its two.
type dualBind struct {
	v4, v6 *addrBind
}

var _ conn.Bind = (*dualBind)(nil)

func newDualBind(batch int, in, out *packetGate) *dualBind {
	b := &dualBind{v4: newAddrBind(netip.IPv4Unspecified(), batch), v6: newAddrBind(netip.IPv6Unspecified(), batch)}
	b.v4.in, b.v4.out, b.v6.in, b.v6.out = in, out, in, out
	return b
}

// Open opens the IPv4 socket, then the IPv6 one on the same port. A host
// without IPv6 gets the IPv4 socket alone; a random port that is taken for
// IPv6 is tried again, as StdNetBind does.
func (b *dualBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	for tries := 0; ; tries++ {
		fns, p, err := b.v4.Open(port)
		if err != nil {
			return nil, 0, err
		}
		fns6, _, err := b.v6.Open(p)
		switch {
		case err == nil:
			return append(fns, fns6...), p, nil
		case errors.Is(err, syscall.EADDRINUSE) && port == 0 && tries < 100:
			b.v4.Close()
			continue
		case errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EPROTONOSUPPORT):
			return fns, p, nil
		default:
			b.v4.Close()
			return nil, 0, err
		}
	}
}

// Close closes both sockets (closing one that is not open does nothing).
func (b *dualBind) Close() error { return errors.Join(b.v4.Close(), b.v6.Close()) }

func (b *dualBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*addrEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	if e.ap.Addr().Is6() {
		return b.v6.Send(bufs, ep)
	}
	return b.v4.Send(bufs, ep)
}

func (b *dualBind) ParseEndpoint(s string) (conn.Endpoint, error) { return b.v4.ParseEndpoint(s) }
func (b *dualBind) SetMark(uint32) error                          { return nil }
func (b *dualBind) BatchSize() int                                { return b.v4.batch }
