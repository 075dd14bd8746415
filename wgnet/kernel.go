package wgnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

// KernelConfig configures a KernelDevice.
type KernelConfig struct {
	// Config is as for New. Address is the interface's address; the TCP
	// buffer sizes, SmallDevice and the nudge do not apply (the kernel's
	// TCP sizes its own buffers), and OnNudge must be nil.
	Config

	// Name is the TUN interface to create, such as "fieldpass0". Required.
	// An interface of that name must not exist yet.
	Name string

	// Prefix is the tunnel address space, routed to the interface.
	// Required; it must contain Address.
	Prefix netip.Prefix
}

// KernelDevice is WireGuard on a kernel TUN interface: wireguard-go as in
// Device, but the TCP connections inside the tunnel are the host kernel's
// rather than a gVisor netstack's. That needs CAP_NET_ADMIN (and
// /dev/net/tun), so it is for a broker whose host grants it; the kernel's
// TCP, with segmentation offload through the TUN device, costs a busy
// stream far less CPU than gVisor's.
//
// A kernel interface is reachable by everything on the host, so the device
// lets through, each way, only TCP between its own listeners and dialled
// connections on Address and the peers (see tunFilter): a peer reaches no
// other peer and no other port of the host, whatever the host's forwarding
// and firewall settings, and no other process of the host reaches a peer.
// A listener accepts only connections whose request came through the
// interface, so no other interface, and no local process using a peer's
// address as its source, reaches it as a peer.
//
// Peers are managed exactly as on a Device, through the same UAPI. Its
// methods are safe for concurrent use.
type KernelDevice struct {
	dev    *Device // the WireGuard side; its tun is nil: never call its DialTCP, ListenTCP
	name   string
	addr   netip.Addr
	filter *tunFilter
}

// closeLinger is how long a dialled connection's port stays open in the
// filter after Close, so that the kernel's closing handshake (FIN, the last
// ACK) still gets through; a port reused meanwhile is counted twice.
const closeLinger = 2 * time.Minute

// Name is the TUN interface's name.
func (k *KernelDevice) Name() string { return k.name }

// PublicKey returns this device's public key.
func (k *KernelDevice) PublicKey() Key { return k.dev.PublicKey() }

// ListenPort returns the UDP port WireGuard is bound to.
func (k *KernelDevice) ListenPort() uint16 { return k.dev.ListenPort() }

// SetPeer adds or updates a peer; see Device.SetPeer.
func (k *KernelDevice) SetPeer(p Peer) error { return k.dev.SetPeer(p) }

// RemovePeer removes a peer; see Device.RemovePeer.
func (k *KernelDevice) RemovePeer(key Key) error { return k.dev.RemovePeer(key) }

// ResetPeer forgets a peer's handshake state; see Device.ResetPeer.
func (k *KernelDevice) ResetPeer(key Key, kick bool) error { return k.dev.ResetPeer(key, kick) }

// DropQueued drops what waits for a handshake with peer k; see
// Device.DropQueued.
func (k *KernelDevice) DropQueued(key Key) { k.dev.DropQueued(key) }

// Peers reports every peer's state; see Device.Peers.
func (k *KernelDevice) Peers() ([]PeerStats, error) { return k.dev.Peers() }

// Peer reports one peer's state; see Device.Peer.
func (k *KernelDevice) Peer(key Key) (PeerStats, bool, error) { return k.dev.Peer(key) }

// Close shuts WireGuard down and removes the interface (a TUN interface
// lives as long as its file descriptor). Listeners and connections on its
// address get errors from then on; their owners close them.
func (k *KernelDevice) Close() error { return k.dev.Close() }

// ListenTCP listens with the kernel's TCP on the interface's address, and
// opens port to the peers.
func (k *KernelDevice) ListenTCP(port uint16) (net.Listener, error) {
	if port == 0 {
		return nil, fmt.Errorf("listen on %s: port 0: a tunnel listener needs a fixed port", k.addr)
	}
	// Opened first: a SYN that arrives between listen and open is merely
	// retransmitted, but one let through to no listener is harmless too.
	k.filter.ports.add(port)
	ln, err := listenTCPOn(k.name, netip.AddrPortFrom(k.addr, port))
	if err != nil {
		k.filter.ports.remove(port)
		return nil, fmt.Errorf("listen on %s port %d: %w", k.addr, port, err)
	}
	return &kernelListener{Listener: ln, filter: k.filter, port: port}, nil
}

// DialTCP connects with the kernel's TCP from the interface's address to
// addr, a peer's address.
func (k *KernelDevice) DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	c, port, err := dialTCPOn(ctx, k.name, k.addr, addr, &k.filter.ports)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	tuneConn(c)
	return &kernelConn{Conn: c, ports: &k.filter.ports, port: port}, nil
}

// kernelListener accepts only connections that came through the interface,
// and closes its port in the filter when it is closed.
type kernelListener struct {
	net.Listener
	filter *tunFilter
	port   uint16
	once   sync.Once
}

// Accept returns the next connection whose request came through the
// interface. Any other is closed unanswered: one from a process of the host
// (the address is local to it), or one that arrived on another interface
// with a peer's address as its source, which the broker would otherwise
// take for that peer.
func (l *kernelListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok && l.filter.syns.take(ta.AddrPort()) {
			tuneConn(c)
			return c, nil
		}
		c.Close()
	}
}

func (l *kernelListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { l.filter.ports.remove(l.port) })
	return err
}

// kernelConn closes its port in the filter closeLinger after it is closed.
type kernelConn struct {
	net.Conn
	ports *portSet
	port  uint16
	once  sync.Once
}

func (c *kernelConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { time.AfterFunc(closeLinger, func() { c.ports.remove(c.port) }) })
	return err
}

// portSet is the TCP ports the device's own sockets use on its address,
// counted, since a dialled port may be reused while an older connection on
// it lingers. Lookups, once per packet, take no lock.
type portSet struct {
	mu    sync.Mutex
	count map[uint16]int
	bits  [1 << 16 / 64]atomic.Uint64
}

func (s *portSet) add(port uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.count == nil {
		s.count = map[uint16]int{}
	}
	s.count[port]++
	s.bits[port/64].Or(1 << (port % 64))
}

func (s *portSet) remove(port uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.count[port] <= 1 {
		delete(s.count, port)
		s.bits[port/64].And(^(uint64(1) << (port % 64)))
		return
	}
	s.count[port]--
}

func (s *portSet) has(port uint16) bool { return s.bits[port/64].Load()&(1<<(port%64)) != 0 }

// synSet is where the connection requests (SYNs) that came through the
// interface to a listener came from, until the listener accepts them.
type synSet struct {
	mu sync.Mutex
	at map[netip.AddrPort]time.Time
}

const (
	// synKeep is how long a request is remembered: longer than the
	// kernel's SYN retries and accept queue would hold it.
	synKeep = time.Minute
	// synMax bounds the set: beyond it, requests are dropped until old
	// ones expire (a peer opening connections it never completes).
	synMax = 8192
)

// add remembers a request from src and reports whether there was room.
func (s *synSet) add(src netip.AddrPort, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = map[netip.AddrPort]time.Time{}
	}
	if _, ok := s.at[src]; !ok && len(s.at) >= synMax {
		for k, t := range s.at {
			if now.Sub(t) > synKeep {
				delete(s.at, k)
			}
		}
		if len(s.at) >= synMax {
			return false
		}
	}
	s.at[src] = now
	return true
}

// take forgets the request from src and reports whether there was one.
func (s *synSet) take(src netip.AddrPort) bool {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.at[src]
	delete(s.at, src)
	return ok
}

// tunFilter is the isolation of a KernelDevice, applied to every packet
// between wireguard-go and the kernel: from the peers (Write) only TCP to
// one of the device's ports on its address reaches the kernel; to the peers
// (Read) only TCP from one of them leaves. Everything else (another peer's
// address, another port, ICMP, UDP, IP fragments, IPv6 extension headers,
// the kernel's own IPv6 chatter) is dropped. wireguard-go has already
// checked each received packet's source against its peer's allowed IPs.
type tunFilter struct {
	tun.Device
	addr  netip.Addr
	ports portSet
	syns  synSet

	droppedIn, droppedOut atomic.Uint64
}

// Read passes on packets the kernel sends; those that may not leave are
// blanked (size 0), which wireguard-go skips: bufs[i] is tied to its own
// buffer, so they cannot be moved.
func (f *tunFilter) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := f.Device.Read(bufs, sizes, offset)
	for i := range n {
		if sizes[i] > 0 && !f.allowedOut(bufs[i][offset:offset+sizes[i]]) {
			sizes[i] = 0
			f.droppedOut.Add(1)
		}
	}
	return n, err
}

// Write hands the kernel the packets a peer may send it. A batch from which
// something is dropped is copied (rare: only a peer probing where it may
// not go has its packets dropped).
func (f *tunFilter) Write(bufs [][]byte, offset int) (int, error) {
	keep, dropped := bufs, false
	for i, b := range bufs {
		ok := f.allowedIn(b[offset:])
		switch {
		case !ok && !dropped:
			keep, dropped = append(make([][]byte, 0, len(bufs)), bufs[:i]...), true
			fallthrough
		case !ok:
			f.droppedIn.Add(1)
		case dropped:
			keep = append(keep, b)
		}
	}
	if len(keep) == 0 {
		return len(bufs), nil
	}
	if _, err := f.Device.Write(keep, offset); err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// allowedOut reports whether packet is TCP from one of the device's ports
// on its address.
func (f *tunFilter) allowedOut(packet []byte) bool {
	port, _, _, ok := localTCP(packet, f.addr, false)
	return ok && f.ports.has(port)
}

// allowedIn reports whether packet is TCP to one of the device's ports on
// its address; a connection request (SYN without ACK) is also remembered,
// for the listener (see kernelListener.Accept).
func (f *tunFilter) allowedIn(packet []byte) bool {
	port, src, seg, ok := localTCP(packet, f.addr, true)
	if !ok || !f.ports.has(port) {
		return false
	}
	const syn, ack = 0x02, 0x10
	if seg[13]&(syn|ack) == syn {
		return f.syns.add(netip.AddrPortFrom(src, binary.BigEndian.Uint16(seg[0:2])), time.Now())
	}
	return true
}

// localTCP parses a TCP packet to addr (in) or from it: it returns the port
// on addr, the other end's address and the TCP segment. It reads only fixed
// offsets: IPv4 fragments and IPv6 extension headers are not TCP here (no
// packet of the broker's has them).
func localTCP(packet []byte, addr netip.Addr, in bool) (port uint16, other netip.Addr, seg []byte, ok bool) {
	if len(packet) == 0 {
		return 0, netip.Addr{}, nil, false
	}
	switch packet[0] >> 4 {
	case 4:
		if len(packet) < 20 || !addr.Is4() {
			return 0, netip.Addr{}, nil, false
		}
		ihl := int(packet[0]&0x0f) * 4
		if ihl < 20 || len(packet) < ihl+20 || packet[9] != 6 {
			return 0, netip.Addr{}, nil, false
		}
		if binary.BigEndian.Uint16(packet[6:8])&0x3fff != 0 { // more fragments, or an offset
			return 0, netip.Addr{}, nil, false
		}
		a, local, remote := addr.As4(), 12, 16
		if in {
			local, remote = 16, 12
		}
		if string(packet[local:local+4]) != string(a[:]) {
			return 0, netip.Addr{}, nil, false
		}
		other = netip.AddrFrom4([4]byte(packet[remote : remote+4]))
		seg = packet[ihl:]
	case 6:
		if len(packet) < 40+20 || !addr.Is6() || packet[6] != 6 {
			return 0, netip.Addr{}, nil, false
		}
		a, local, remote := addr.As16(), 8, 24
		if in {
			local, remote = 24, 8
		}
		if string(packet[local:local+16]) != string(a[:]) {
			return 0, netip.Addr{}, nil, false
		}
		other = netip.AddrFrom16([16]byte(packet[remote : remote+16]))
		seg = packet[40:]
	default:
		return 0, netip.Addr{}, nil, false
	}
	if in {
		return binary.BigEndian.Uint16(seg[2:4]), other, seg, true
	}
	return binary.BigEndian.Uint16(seg[0:2]), other, seg, true
}

// checkKernelConfig checks what NewKernel needs before it touches the host.
func checkKernelConfig(cfg *KernelConfig) error {
	if cfg.Name == "" {
		return errors.New("no interface name")
	}
	if len(cfg.Name) >= 16 { // IFNAMSIZ, with its NUL
		return fmt.Errorf("interface name %q longer than 15 bytes", cfg.Name)
	}
	if cfg.PrivateKey.IsZero() {
		return errors.New("no private key")
	}
	cfg.Address = cfg.Address.Unmap()
	if !cfg.Address.IsValid() {
		return errors.New("no tunnel address")
	}
	if !cfg.Prefix.IsValid() || !cfg.Prefix.Contains(cfg.Address) {
		return fmt.Errorf("tunnel prefix %s does not contain the address %s", cfg.Prefix, cfg.Address)
	}
	if cfg.OnNudge != nil {
		return errors.New("nudges are not supported on a kernel TUN device")
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 576 || (cfg.Address.Is6() && cfg.MTU < 1280) || cfg.MTU > device.MaxContentSize {
		return fmt.Errorf("MTU %d out of range", cfg.MTU)
	}
	return nil
}
