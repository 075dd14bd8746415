package broker

import (
	"context"
	"net"
	"net/netip"

	"github.com/fieldpass/fieldpass/wgnet"
)

// Network is the WireGuard side of the broker: by default a userspace
// device on a gVisor netstack (wgnet.Device), rootless; on hosts that grant
// CAP_NET_ADMIN, a kernel TUN interface with the kernel's TCP
// (wgnet.KernelDevice, serve --tun). The rest of the broker sees only this.
type Network interface {
	// ListenTCP listens on the broker's tunnel address.
	ListenTCP(port uint16) (net.Listener, error)
	// DialTCP dials a device's tunnel address (used only to nudge).
	DialTCP(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	SetPeer(p wgnet.Peer) error
	RemovePeer(k wgnet.Key) error
	// ResetPeer forgets a peer's handshake state (see wgnet.Device).
	ResetPeer(k wgnet.Key, kick bool) error
	// DropQueued drops the packets that wait for a handshake with a peer
	// (a nudge to a device that did not answer).
	DropQueued(k wgnet.Key)
	// Peers reports every peer's counters, endpoint and last handshake.
	Peers() ([]wgnet.PeerStats, error)
	// ListenPort is the UDP port WireGuard is bound to.
	ListenPort() uint16
	Close() error
}

var (
	_ Network = (*wgnet.Device)(nil)
	_ Network = (*wgnet.KernelDevice)(nil)
)

// KernelNetwork is Config.NewNetwork for the kernel TUN mode: the interface
// name, given the broker's address in prefix (Config.Prefix).
func KernelNetwork(name string, prefix netip.Prefix) func(wgnet.Config) (Network, error) {
	return func(wc wgnet.Config) (Network, error) {
		kd, err := wgnet.NewKernel(wgnet.KernelConfig{Config: wc, Name: name, Prefix: prefix})
		if err != nil {
			return nil, err
		}
		return kd, nil
	}
}
