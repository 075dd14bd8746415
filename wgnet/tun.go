package wgnet

// The tun.Device here started from wireguard-go's tun/netstack/tun.go
// (golang.zx2c4.com/wireguard, MIT, Copyright (C) 2017-2025 WireGuard LLC).
// What changed and why:
//   - Read drains up to tunBatchSize packets straight from the channel
//     endpoint's queue instead of one packet at a time through an unbuffered
//     Go channel fed by WriteNotify: that hand-off capped the spike at
//     ~100 MB/s.
//   - The queue holds tunQueueLen packets, because channel.Endpoint drops
//     (rather than blocks) when its queue is full, and a TCP sender with a
//     few MiB of window easily bursts past netstack's 1024.
//   - The *stack.Stack stays ours, so TCP buffers can be sized.
//   - Write can recognise the broker's nudge (see Config.NudgePort).
//   - Segmentation offload both ways: gVisor's TCP sends segments of up to
//     64 KiB that Read cuts to the MTU (gso.go), and Write coalesces a
//     batch's consecutive TCP segments before the stack sees them (gVisor's
//     GRO). gVisor's per-segment cost was most of the CPU a stream took.

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

const (
	// tunQueueLen is the channel endpoint's outbound queue, in packets:
	// 4096 x MTU 1280 is ~5 MB, above one connection's default send window.
	// (A queued TCP segment may be up to 64 KiB, see gso.go, but its data is
	// a reference to the connection's send buffer, not a copy.)
	tunQueueLen = 4096
	// tunBatchSize is the most packets one Read returns by default; it
	// matches conn.IdealBatchSize so a read fills one encryption batch.
	tunBatchSize = 128
	// smallBatchSize is the batch of Config.SmallDevice: wireguard-go keeps
	// a 64 KiB buffer per packet of a batch (see dualBind).
	smallBatchSize = 16
	// initialSendBuffer is where a TCP connection's send buffer starts
	// before auto-tuning (gVisor's default is 1 MiB).
	initialSendBuffer = 64 << 10
	// minRTO is the TCP minimum retransmission timeout (RFC 6298 2.4;
	// gVisor's default is 200 ms). A lone lost packet (a stream's open, a
	// keystroke, the tail of a burst: nothing behind it for SACK to show
	// the gap) waits this long, as RACK's tail loss probe is off (see
	// configure). It was 1 s, which made a new stream's p99 on a lossy
	// link seconds. It cannot be gVisor's 200 ms: a cellular path's RTT
	// grows from tens to hundreds of milliseconds under the carrier's
	// long-lived connection, gVisor's RTT estimate follows slowly (with
	// timestamps it weighs each sample by 1/(packets in flight), and GRO
	// means few ACKs), so the first flight after the growth met a 200 ms
	// RTO that fired spuriously and cut ssthresh to a few packets; gVisor
	// detects that (SpuriousRecovery) but does not undo it, and Reno crept
	// back at one packet per round trip: 0.23 MiB/s at 300 ms against 4.3
	// on a connection set up there (BenchmarkPathChange). 500 ms keeps that
	// case whole.
	minRTO = 500 * time.Millisecond
	// nicID is the only NIC of the stack.
	nicID tcpip.NICID = 1
	// nudgeInterval is the least time between two OnNudge calls.
	nudgeInterval = time.Second
)

// stackConfig is what netTun needs to build its gVisor stack.
type stackConfig struct {
	addr           netip.Addr
	mtu            int
	sendBuffer     int // maximum TCP send buffer, bytes
	receiveBuffer  int // maximum TCP receive buffer, bytes
	nudgePort      uint16
	nudge          chan<- struct{} // nil: no nudge detection
	defaultTCPSize int             // initial TCP buffer size, bytes
	batch          int             // most packets per Read
	in, out        *packetGate     // nil: no gates
}

// netTun is a tun.Device whose "kernel" is a gVisor network stack.
// wireguard-go calls Read from one goroutine and Write from one goroutine per
// peer, concurrently; both are safe for that.
type netTun struct {
	ep     *channel.Endpoint
	stack  *stack.Stack
	events chan tun.Event
	mtu    int
	batch  int
	ctx    context.Context // done once Close has begun; unblocks Read
	cancel context.CancelFunc

	// Nudge detection; nudge is nil when it is off.
	nudge     chan<- struct{}
	nudgePort uint16
	addr      netip.Addr
	lastNudge atomic.Int64 // unix nanoseconds of the last nudge let through

	// gro holds *gro.GRO, one per concurrent Write: wireguard-go writes
	// from one goroutine per peer, and a GRO engine is not safe for
	// concurrent use. After Flush one holds no packets.
	gro sync.Pool

	// seg is the large segment Read is cutting up; only Read uses it.
	seg segmenter

	// out counts the packets Read hands to wireguard-go, in those it
	// Writes; nil unless Config.SmallDevice (see packetGate).
	out, in *packetGate

	// conns holds the boundedConns by endpoint, for probe.
	conns sync.Map // tcp.TCPEndpointID -> *boundedConn

	trimmer   sync.WaitGroup // the trimSendBuffers goroutine
	closeOnce sync.Once
}

// injector hands packets that GRO let through to the stack.
type injector struct{ ep *channel.Endpoint }

func (i injector) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	i.ep.InjectInbound(proto, pkt)
}

func (injector) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func newNetTun(cfg stackConfig) (*netTun, error) {
	ctx, cancel := context.WithCancel(context.Background())
	t := &netTun{
		ep:        channel.New(tunQueueLen, uint32(cfg.mtu), ""),
		events:    make(chan tun.Event, 1),
		mtu:       cfg.mtu,
		batch:     cmp.Or(cfg.batch, tunBatchSize),
		in:        cfg.in,
		out:       cfg.out,
		ctx:       ctx,
		cancel:    cancel,
		nudge:     cfg.nudge,
		nudgePort: cfg.nudgePort,
		addr:      cfg.addr,
	}
	// The probe sees every segment TCP receives: the receiver's window,
	// which boundedConn needs and no option reads (sndbuf.go).
	t.stack = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocolProbe(t.probe), icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	// Every packet Write hands to the stack was authenticated by WireGuard's
	// AEAD, which is a far stronger check than the TCP checksum, so gVisor
	// need not verify it again. (Checksums are still computed on send: the
	// other end may be a kernel stack that checks them.)
	t.ep.LinkEPCapabilities = stack.CapabilityRXChecksumOffload
	t.gro.New = func() any {
		g := &gro.GRO{Dispatcher: injector{t.ep}}
		g.Init(true)
		return g
	}

	if err := t.configure(cfg); err != nil {
		t.Close()
		return nil, err
	}
	t.trimmer.Add(1)
	go func() {
		defer t.trimmer.Done()
		tick := time.NewTicker(trimInterval)
		defer tick.Stop()
		for {
			select {
			case <-t.ctx.Done():
				return
			case <-tick.C:
				t.trimSendBuffers()
			}
		}
	}()
	return t, nil
}

func (t *netTun) configure(cfg stackConfig) error {
	sack := tcpip.TCPSACKEnabled(true) // off by default in gVisor; it matters on lossy radio links
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fmt.Errorf("enable TCP SACK: %s", err)
	}
	// RACK loss detection off (classic SACK recovery and RTO stay), and
	// with it the tail loss probe, which this gVisor has only with RACK.
	// Its sender re-schedules the probe on every attempt to send (each
	// write, each segment received), which stops the retransmission timer,
	// and once the one probe is out, the probe timer's expiry re-arms that
	// timer a full RTO from then (rack.go schedulePTO, probeTimerExpired;
	// snd.go postXmit). So a connection whose whole flight was lost (an
	// outage: a roam, a dead cell) never times out while anything is
	// written or received more often than the RTO: TestOutageRecovers
	// with RACK saw no timeout and one retransmission in 13 s of pings
	// every 20 ms after the outage; with the pings stopped, the RTO fired.
	// Without RACK the RTO fires and backs off as it should. A fix needs
	// gVisor's tcp package changed (the timer kept to the oldest
	// unacknowledged segment's send time plus the RTO, as Linux does).
	recovery := tcpip.TCPRecovery(0)
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &recovery); err != nil {
		return fmt.Errorf("disable TCP RACK: %s", err)
	}
	// Reno, gVisor's default, stays: its CUBIC was measured worse across
	// the field benchmark's shaped carrier (make bench-field: 2.5 times the
	// tail drops at 20 Mbit/s and 0.85 of the link against Reno's 0.93;
	// at 5 % loss, uploads that had not finished after 60 s).
	cc := tcpip.CongestionControlOption("reno")
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &cc); err != nil {
		return fmt.Errorf("set TCP congestion control: %s", err)
	}
	// Minimum retransmission timeout (RFC 6298 2.4; gVisor's default is
	// 200 ms); see minRTO.
	minRTO := tcpip.TCPMinRTOOption(minRTO)
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &minRTO); err != nil {
		return fmt.Errorf("set TCP minimum RTO: %s", err)
	}
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate); err != nil {
		return fmt.Errorf("enable TCP receive buffer moderation: %s", err)
	}
	// The send buffer starts small and gVisor's auto-tuning grows it to
	// twice the congestion window: what the path holds, not what the
	// maximum allows. Data a connection has queued but not sent delays
	// every stream behind it (all of a device's streams share one
	// connection), so starting at 1 MiB cost 0.4 s at 20 Mbit/s.
	send := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: min(initialSendBuffer, cfg.sendBuffer), Max: cfg.sendBuffer}
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &send); err != nil {
		return fmt.Errorf("set TCP send buffer %d: %s", cfg.sendBuffer, err)
	}
	recv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: min(cfg.defaultTCPSize, cfg.receiveBuffer), Max: cfg.receiveBuffer}
	if err := t.stack.SetTransportProtocolOption(tcp.ProtocolNumber, &recv); err != nil {
		return fmt.Errorf("set TCP receive buffer %d: %s", cfg.receiveBuffer, err)
	}

	if err := t.stack.CreateNIC(nicID, gsoEndpoint{t.ep}); err != nil {
		return fmt.Errorf("create NIC: %s", err)
	}
	proto, subnet := ipv4.ProtocolNumber, header.IPv4EmptySubnet
	if cfg.addr.Is6() {
		proto, subnet = ipv6.ProtocolNumber, header.IPv6EmptySubnet
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddrFromSlice(cfg.addr.AsSlice()).WithPrefix(),
	}
	if err := t.stack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("add address %s: %s", cfg.addr, err)
	}
	// Everything leaves through WireGuard, whose allowed IPs do the routing.
	t.stack.AddRoute(tcpip.Route{Destination: subnet, NIC: nicID})
	return nil
}

func (t *netTun) Name() (string, error)    { return "wgnet", nil }
func (t *netTun) File() *os.File           { return nil }
func (t *netTun) Events() <-chan tun.Event { return t.events }
func (t *netTun) MTU() (int, error)        { return t.mtu, nil }
func (t *netTun) BatchSize() int           { return t.batch }

// Read blocks for the first packet the stack sends, then takes whatever else
// is already queued, up to len(bufs), so that wireguard-go encrypts and sends
// in batches. It cuts gVisor's large TCP segments into MTU-sized packets
// (gso.go), carrying the rest of one over to the next call when bufs is full.
func (t *netTun) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.out.wait()
	n, err := t.read(bufs, sizes, offset)
	t.out.enter(n)
	return n, err
}

func (t *netTun) read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	if t.seg.active() {
		n = t.seg.next(bufs, sizes, offset)
		if n == len(bufs) {
			return n, nil
		}
	}
	var pkt *stack.PacketBuffer
	if n == 0 {
		if pkt = t.ep.ReadContext(t.ctx); pkt == nil {
			return 0, os.ErrClosed
		}
	} else if pkt = t.ep.Read(); pkt == nil {
		return n, nil
	}
	for {
		if needsSplit(pkt) {
			if t.seg.start(pkt) {
				n += t.seg.next(bufs[n:], sizes[n:], offset)
			}
		} else {
			sizes[n] = copyPacket(bufs[n][offset:], pkt)
			if pkt.GSOOptions.NeedsCsum {
				finishChecksum(bufs[n][offset:offset+sizes[n]], len(pkt.NetworkHeader().Slice()))
			}
			pkt.DecRef()
			n++
		}
		if n == len(bufs) {
			return n, nil
		}
		if pkt = t.ep.Read(); pkt == nil {
			return n, nil
		}
	}
}

// copyPacket copies pkt into dst without the intermediate allocations of
// PacketBuffer.ToView or AsSlices, and returns the bytes copied.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) int {
	views, skip := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil && n < len(dst); v = v.Next() {
		b := v.AsSlice()
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		n += copy(dst[n:], b[skip:])
		skip = 0
	}
	return n
}

// Write delivers packets that WireGuard decrypted to the stack. It coalesces
// consecutive segments of a TCP stream in bufs into one (gVisor's GRO engine,
// as its fdbased link endpoint uses), so that the stack processes, and
// acknowledges, one large segment instead of dozens: that is most of what a
// receiving gVisor TCP costs. GRO may skip its own header checks (we mark
// packets RXChecksumValidated): wireguard-go has already cut each packet to
// its IP length and checked its source against the peer's allowed IPs, and
// one Write call carries one peer's packets only.
func (t *netTun) Write(bufs [][]byte, offset int) (int, error) {
	g := t.gro.Get().(*gro.GRO)
	defer t.gro.Put(g)
	defer g.Flush()
	// wireguard-go is done with these buffers once Write returns.
	defer t.in.leave(len(bufs))
	for _, b := range bufs {
		packet := b[offset:]
		if len(packet) == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch packet[0] >> 4 {
		case 4:
			proto = header.IPv4ProtocolNumber
		case 6:
			proto = header.IPv6ProtocolNumber
		default:
			continue // wireguard-go has already dropped anything but IPv4/IPv6
		}
		if t.nudge != nil && isSYNTo(packet, t.addr, t.nudgePort) {
			t.fireNudge()
		}
		// MakeWithData copies: wireguard-go reuses b once Write returns.
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(packet)})
		pkt.NetworkProtocolNumber = proto
		pkt.RXChecksumValidated = true // see CapabilityRXChecksumOffload in newNetTun
		g.Enqueue(pkt)
		pkt.DecRef()
	}
	return len(bufs), nil
}

// fireNudge signals the nudge goroutine at most once per nudgeInterval and
// never blocks: a nudge that finds one already pending is merged into it.
func (t *netTun) fireNudge() {
	now := time.Now().UnixNano()
	last := t.lastNudge.Load()
	if last != 0 && now-last < int64(nudgeInterval) {
		return
	}
	if !t.lastNudge.CompareAndSwap(last, now) {
		return // another peer's goroutine fired it just now
	}
	select {
	case t.nudge <- struct{}{}:
	default:
	}
}

// isSYNTo reports whether packet is a TCP SYN (without ACK) to addr:port.
// It looks only at fixed offsets: IPv6 extension headers and IPv4 fragments
// other than the first are not nudges (the broker's SYN has neither).
func isSYNTo(packet []byte, addr netip.Addr, port uint16) bool {
	if len(packet) == 0 {
		return false
	}
	var seg []byte
	switch packet[0] >> 4 {
	case 4:
		if len(packet) < header.IPv4MinimumSize || !addr.Is4() {
			return false
		}
		ihl := int(packet[0]&0x0f) * 4
		if ihl < header.IPv4MinimumSize || len(packet) < ihl+header.TCPMinimumSize {
			return false
		}
		if packet[9] != byte(header.TCPProtocolNumber) {
			return false
		}
		if binary.BigEndian.Uint16(packet[6:8])&0x1fff != 0 { // fragment offset
			return false
		}
		if a := addr.As4(); string(packet[16:20]) != string(a[:]) {
			return false
		}
		seg = packet[ihl:]
	case 6:
		if len(packet) < header.IPv6MinimumSize+header.TCPMinimumSize || !addr.Is6() {
			return false
		}
		if packet[6] != byte(header.TCPProtocolNumber) {
			return false
		}
		if a := addr.As16(); string(packet[24:40]) != string(a[:]) {
			return false
		}
		seg = packet[header.IPv6MinimumSize:]
	default:
		return false
	}
	const syn, ack = 0x02, 0x10
	return binary.BigEndian.Uint16(seg[2:4]) == port && seg[13]&(syn|ack) == syn
}

// Close tears the stack down and makes Read return os.ErrClosed. It waits for
// gVisor's worker goroutines to stop.
func (t *netTun) Close() error {
	t.closeOnce.Do(func() {
		t.cancel()
		t.trimmer.Wait()
		t.stack.Destroy()
		t.ep.Close()
		close(t.events)
	})
	return nil
}
