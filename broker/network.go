package broker

import (
	"context"
	"net"
	"net/netip"

	"github.com/fieldpass/fieldpass/wgnet"
)

// Network is the WireGuard side of the broker: a userspace device on a
// gVisor netstack today (wgnet.Device). It is an interface so that a kernel
// TUN mode, for hosts that grant CAP_NET_ADMIN, can be added without
// touching the rest of the broker.
type Network interface {
	// ListenTCP listens on the broker's tunnel address.
	ListenTCP(port uint16) (net.Listener, error)
	// DialTCP dials a device's tunnel address (used only to nudge).
	DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	SetPeer(p wgnet.Peer) error
	RemovePeer(k wgnet.Key) error
	// ResetPeer forgets a peer's handshake state (see wgnet.Device).
	ResetPeer(k wgnet.Key, kick bool) error
	// Peers reports every peer's counters, endpoint and last handshake.
	Peers() ([]wgnet.PeerStats, error)
	// ListenPort is the UDP port WireGuard is bound to.
	ListenPort() uint16
	Close() error
}

var _ Network = (*wgnet.Device)(nil)
