package wgnet_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/fieldpass/fieldpass/wgnet"
)

// TestSmallDevice: a connector with SmallDevice and no ListenAddr listens
// on all addresses with its own two sockets, and carries streams both ways
// to a broker reached over IPv4 and to one reached over IPv6.
func TestSmallDevice(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen netip.AddrPort
	}{
		{"IPv4", loopback},
		{"IPv6", netip.MustParseAddrPort("[::1]:0")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.listen.Addr().Is6() {
				if l, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(tc.listen)); err != nil {
					t.Skipf("no IPv6 loopback here: %v", err)
				} else {
					l.Close()
				}
			}
			var p pair
			p.broker = MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr, ListenAddr: tc.listen})
			p.connector = MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: connectorAddr, SmallDevice: true})
			defer p.Close()
			MustSetPeer(t, p.broker, p.connectorPeer())
			bp := p.brokerPeer()
			bp.Endpoint = netip.AddrPortFrom(tc.listen.Addr(), p.broker.ListenPort())
			MustSetPeer(t, p.connector, bp)
			p.MustHandshake(t)
			MustListenEcho(t, p.broker, 7)
			MustListenEcho(t, p.connector, 7)
			const n = 8 << 20
			if err := echo(MustDial(t, p.connector, netip.AddrPortFrom(brokerAddr, 7)), n, nil); err != nil {
				t.Fatalf("connector to broker: %v", err)
			}
			if err := echo(MustDial(t, p.broker, netip.AddrPortFrom(connectorAddr, 7)), n, nil); err != nil {
				t.Fatalf("broker to connector: %v", err)
			}
			if err := p.connector.Rebind(); err != nil {
				t.Fatalf("rebind: %v", err)
			}
			if err := echo(MustDial(t, p.connector, netip.AddrPortFrom(brokerAddr, 7)), 1<<20, nil); err != nil {
				t.Fatalf("after a rebind: %v", err)
			}
		})
	}
}
