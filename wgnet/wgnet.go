// Package wgnet is userspace WireGuard networking: a wireguard-go device on a
// batched gVisor netstack, behind a small interface. Both the broker (one
// device, thousands of peers) and the connector (one peer, the broker) use it,
// rootless: no TUN, no kernel module, no CAP_NET_ADMIN. A broker whose host
// grants CAP_NET_ADMIN may instead run the same WireGuard on a kernel TUN
// interface with the kernel's TCP (KernelDevice, kernel.go).
//
// It exists, rather than wireguard-go's tun/netstack used directly, because
// of what a spike of exactly this path hit:
//
//   - tun/netstack hands packets to WireGuard one at a time through an
//     unbuffered channel and hides gVisor's *stack.Stack. Our own tun.Device
//     (tun.go) reads up to 128 packets per call from a 4096-packet queue and
//     keeps the stack, so TCP buffer sizes can be set. That roughly doubled
//     rootless throughput in the spike. It also does TCP segmentation
//     offload for gVisor's sender (gso.go) and coalesces received segments
//     (GRO), since gVisor's per-segment cost dominated a busy stream.
//   - wireguard-go's stock bind listens on the wildcard address, IPv4 and
//     IPv6. Config.ListenAddr with a specific address uses a small batched
//     single-address bind of our own (bind.go), with UDP GSO/GRO where the
//     kernel has them.
//   - After the connector's socket changes, the broker keeps sending to the
//     old address until the connector sends something: Rebind sends at once.
//   - A device without a real-time clock reboots into 1970, and WireGuard
//     then refuses its handshakes forever, because their TAI64N timestamps
//     are older than the last one accepted: ResetPeer forgets that state.
//   - After a broker restart the connector's idle TCP connection inside the
//     tunnel is silently dead, and cellular data is paid per byte, so there
//     is no application heartbeat to notice. Instead the broker "nudges":
//     it opens a TCP connection to the connector's Config.NudgePort, and the
//     connector's Config.OnNudge reconnects at once. Cryptokey routing means
//     only the broker's key can deliver that SYN, so it needs no further
//     authentication.
//   - Keys: wireguard-go has no exported key generation (key.go).
package wgnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

const (
	// DefaultMTU is the tunnel MTU when Config.MTU is zero. 1280 plus
	// WireGuard's 80 bytes of overhead over IPv6 still fits the 1500 of
	// private cellular APNs that drop fragments, and 1280 is IPv6's minimum.
	DefaultMTU = 1280

	// DefaultTCPBuffer is the maximum TCP send and receive buffer, per
	// connection, when Config.TCPSendBuffer or TCPReceiveBuffer is zero.
	// 4 MiB covers the bandwidth-delay product of a cellular link (10 MB/s
	// at 300 ms is 3 MB), and bigger buffers bought nothing on loopback in
	// the spike. gVisor allocates buffer space only for data actually queued
	// and auto-tunes the receive window up from defaultTCPInitialBuffer, so
	// an idle connection on the broker costs next to nothing.
	DefaultTCPBuffer = 4 << 20

	// SmallTCPBuffer is the maximum TCP buffer with Config.SmallDevice:
	// still above the bandwidth-delay product of a 20 Mbit/s cellular link
	// at 300 ms (750 KB).
	SmallTCPBuffer = 1 << 20

	// defaultTCPInitialBuffer is where gVisor's receive buffers start (its
	// default); send buffers start at initialSendBuffer.
	defaultTCPInitialBuffer = 1 << 20
)

// ErrUnknownPeer is returned for a public key that is not a peer.
var ErrUnknownPeer = errors.New("unknown peer")

// Config configures a Device. Its zero value, with PrivateKey and Address
// set, is a working configuration.
type Config struct {
	// PrivateKey is this node's WireGuard private key. Required.
	PrivateKey Key

	// Address is this node's address inside the tunnel, IPv4 or IPv6.
	// Required. The stack routes every other address to WireGuard, whose
	// peers' allowed IPs then pick the peer.
	Address netip.Addr

	// MTU is the tunnel MTU in bytes. Zero means DefaultMTU.
	MTU int

	// ListenAddr is the local UDP address. The zero value (or an unspecified
	// address such as 0.0.0.0) listens on all addresses, IPv4 and IPv6, with
	// wireguard-go's stock bind; a specific address listens on that address
	// only. Port zero means a random port; see ListenPort.
	ListenAddr netip.AddrPort

	// TCPSendBuffer and TCPReceiveBuffer are the most bytes one TCP
	// connection inside the tunnel may buffer in each direction. Zero means
	// DefaultTCPBuffer, or SmallTCPBuffer with SmallDevice.
	TCPSendBuffer    int
	TCPReceiveBuffer int

	// SmallDevice sizes the device for small hardware with one peer (the
	// connector on a router with 64 MB), at some cost in peak throughput:
	// WireGuard moves batches of 16 packets instead of 128 (wireguard-go
	// holds a 64 KiB buffer per packet of a batch, for each receive
	// socket: 16 MiB of live heap by default), at most 64 packets each way
	// are inside wireguard-go at once (packetGate), TCP buffers are at most
	// SmallTCPBuffer unless set, and with an unspecified ListenAddr the
	// device listens on two sockets of its own (IPv4 and IPv6) instead of
	// wireguard-go's. The zero value, false, suits the broker.
	SmallDevice bool

	// Logger receives wireguard-go's log lines, all at debug level: its
	// "errors" are per-packet and transient (a peer's NAT mapping expired)
	// and would flood a broker's log. Nil discards them.
	Logger *slog.Logger

	// NudgePort and OnNudge: when OnNudge is not nil, a TCP SYN arriving
	// through the tunnel for Address:NudgePort calls OnNudge, at most once a
	// second, from a goroutine of its own (a slow OnNudge delays only later
	// nudges; it must not call Close, which waits for it). The SYN still
	// reaches the stack, which refuses it unless something listens there.
	// See the package comment for why.
	NudgePort uint16
	OnNudge   func()
}

// Device is a WireGuard device with its own TCP/IP stack. Its methods are
// safe for concurrent use.
type Device struct {
	wg        *device.Device
	tun       *netTun
	addr      netip.Addr
	pub       Key
	fixedPort bool          // ListenAddr named a port: Rebind keeps it
	port      atomic.Uint32 // UDP port, refreshed after each bind

	// mu serialises configuration changes, so that ResetPeer's read of a
	// peer and its rewrite see no SetPeer in between.
	mu sync.Mutex

	// dumpMu guards dump, the buffer UAPI dumps are read into: a broker
	// reads every peer's counters every few seconds, and a fresh string
	// per dump was most of its garbage at a thousand peers.
	dumpMu sync.Mutex
	dump   bytes.Buffer

	nudgeDone chan struct{} // nil when nudges are off
	nudgeWG   sync.WaitGroup
	closeOnce sync.Once
}

// New creates a device, binds its UDP socket and brings it up, with no peers.
func New(cfg Config) (*Device, error) {
	if cfg.PrivateKey.IsZero() {
		return nil, errors.New("new device: no private key")
	}
	if !cfg.Address.IsValid() {
		return nil, errors.New("new device: no tunnel address")
	}
	addr := cfg.Address.Unmap()
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < 576 || (addr.Is6() && mtu < 1280) || mtu > device.MaxContentSize {
		return nil, fmt.Errorf("new device: MTU %d out of range", mtu)
	}
	sendBuf, recvBuf, batch := cfg.TCPSendBuffer, cfg.TCPReceiveBuffer, tunBatchSize
	defBuf := DefaultTCPBuffer
	if cfg.SmallDevice {
		defBuf, batch = SmallTCPBuffer, smallBatchSize
	}
	if sendBuf == 0 {
		sendBuf = defBuf
	}
	if recvBuf == 0 {
		recvBuf = defBuf
	}
	if sendBuf < 4096 || recvBuf < 4096 {
		return nil, fmt.Errorf("new device: TCP buffers %d/%d below 4096 bytes", sendBuf, recvBuf)
	}
	if cfg.OnNudge != nil && cfg.NudgePort == 0 {
		return nil, errors.New("new device: OnNudge set but NudgePort is zero")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	d := &Device{
		addr:      addr,
		pub:       cfg.PrivateKey.Public(),
		fixedPort: cfg.ListenAddr.Port() != 0,
	}
	var nudge chan struct{}
	if cfg.OnNudge != nil {
		nudge = make(chan struct{}, 1)
		d.nudgeDone = make(chan struct{})
	}
	var in, out *packetGate
	if cfg.SmallDevice {
		in, out = newPacketGate(gatePackets), newPacketGate(gatePackets)
	}
	t, err := newNetTun(stackConfig{
		addr:           addr,
		mtu:            mtu,
		sendBuffer:     sendBuf,
		receiveBuffer:  recvBuf,
		defaultTCPSize: min(defaultTCPInitialBuffer, recvBuf),
		batch:          batch,
		in:             in,
		out:            out,
		nudgePort:      cfg.NudgePort,
		nudge:          nudge,
	})
	if err != nil {
		return nil, fmt.Errorf("new device: %w", err)
	}
	d.tun = t

	var bind conn.Bind
	switch la := cfg.ListenAddr.Addr(); {
	case la.IsValid() && !la.IsUnspecified():
		b := newAddrBind(la, batch)
		b.in, b.out = in, out
		bind = b
	case cfg.SmallDevice:
		bind = newDualBind(batch, in, out)
	default:
		bind = conn.NewDefaultBind()
	}
	d.wg = device.NewDevice(t, bind, wgLogger(logger))

	// The private key goes straight into IpcSet and is never formatted
	// anywhere else, least of all into a log line.
	set := fmt.Sprintf("private_key=%x\nlisten_port=%d\n", cfg.PrivateKey[:], cfg.ListenAddr.Port())
	if err := d.wg.IpcSet(set); err != nil {
		d.wg.Close()
		return nil, fmt.Errorf("new device: configure: %w", err)
	}
	if err := d.wg.Up(); err != nil {
		d.wg.Close()
		return nil, fmt.Errorf("new device: listen on udp %s: %w", cfg.ListenAddr, err)
	}
	if err := d.refreshPort(); err != nil {
		d.wg.Close()
		return nil, fmt.Errorf("new device: %w", err)
	}

	if nudge != nil {
		d.nudgeWG.Add(1)
		go func() {
			defer d.nudgeWG.Done()
			for {
				select {
				case <-nudge:
					cfg.OnNudge()
				case <-d.nudgeDone:
					return
				}
			}
		}()
	}
	return d, nil
}

// wgLogger adapts wireguard-go's printf-style logger to slog at debug level.
// Enabled is checked per line, so the formatting costs nothing unless
// someone listens, and a slog.LevelVar can switch it on at run time.
func wgLogger(l *slog.Logger) *device.Logger {
	logf := func(attrs ...slog.Attr) func(string, ...any) {
		attrs = append(attrs, slog.String("component", "wireguard"))
		return func(format string, args ...any) {
			ctx := context.Background()
			if l.Enabled(ctx, slog.LevelDebug) {
				l.LogAttrs(ctx, slog.LevelDebug, fmt.Sprintf(format, args...), attrs...)
			}
		}
	}
	return &device.Logger{
		Verbosef: logf(),
		Errorf:   logf(slog.Bool("wireguard_error", true)),
	}
}

// Close shuts the device down: the UDP socket, every TCP connection and
// listener of its stack, and all goroutines it started. It returns once
// they have stopped, except for a few of wireguard-go's workers, which exit
// moments later.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.wg.Close()
		if d.nudgeDone != nil {
			close(d.nudgeDone)
			d.nudgeWG.Wait()
		}
	})
	return nil
}

// PublicKey returns this device's public key.
func (d *Device) PublicKey() Key { return d.pub }

// ListenPort returns the UDP port the device is bound to.
func (d *Device) ListenPort() uint16 { return uint16(d.port.Load()) }

// DialTCP opens a TCP connection through the tunnel.
func (d *Device) DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	fa, proto := d.fullAddr(addr)
	c, err := d.tun.dialTCP(ctx, fa, proto)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}

// ListenTCP listens for TCP connections to this device's tunnel address.
func (d *Device) ListenTCP(port uint16) (net.Listener, error) {
	fa, proto := d.fullAddr(netip.AddrPortFrom(d.addr, port))
	l, err := d.tun.listenTCP(fa, proto)
	if err != nil {
		return nil, fmt.Errorf("listen on %s port %d: %w", d.addr, port, err)
	}
	return l, nil
}

func (d *Device) fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	proto := ipv4.ProtocolNumber
	if a.Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: ap.Port()}, proto
}

// Rebind re-opens the UDP socket and then sends to every peer at once, for
// the connector after a change of network: the broker learns the new
// address from that first packet instead of sending into the void until the
// connector happens to send (9 s seen in the spike). Unless Config.ListenAddr
// named a port, the new socket gets a new random port, so that no stale NAT
// mapping or conntrack entry of the old one is reused. Connections inside
// the tunnel survive: TCP retransmits what was lost meanwhile.
func (d *Device) Rebind() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	if d.fixedPort {
		err = d.wg.BindUpdate()
	} else {
		// Setting listen_port closes the socket and binds a new one; port 0
		// makes the kernel pick.
		err = d.wg.IpcSet("listen_port=0\n")
	}
	if err != nil {
		return fmt.Errorf("rebind: %w", err)
	}
	if err := d.refreshPort(); err != nil {
		return fmt.Errorf("rebind: %w", err)
	}
	if err := d.sendKeepalives(); err != nil {
		return fmt.Errorf("rebind: %w", err)
	}
	return nil
}

// SendKeepalive sends a keepalive to every peer now (starting a handshake
// with those that have no session), so that each learns this device's
// current address. Meant for the connector; on a broker it would start a
// handshake with every peer it knows an address for.
func (d *Device) SendKeepalive() error {
	if err := d.sendKeepalives(); err != nil {
		return fmt.Errorf("send keepalive: %w", err)
	}
	return nil
}

func (d *Device) sendKeepalives() error {
	return d.scanPeers(nil, func(s *peerState) {
		if p := d.wg.LookupPeer(device.NoisePublicKey(s.PublicKey)); p != nil {
			p.SendKeepalive()
		}
	})
}

// refreshPort caches the bound port, which only wireguard-go's UAPI reports.
func (d *Device) refreshPort() error {
	uapi, err := d.wg.IpcGet()
	if err != nil {
		return fmt.Errorf("read listen port: %w", err)
	}
	port, ok := uapiListenPort(uapi)
	if !ok {
		return errors.New("read listen port: device is not bound")
	}
	d.port.Store(uint32(port))
	return nil
}
