package broker_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/wgnet"
)

// TestDeviceReachesOnlyTheTunnelPort: a device, or anyone holding its key,
// routes the whole tunnel prefix to the broker and tries another device's
// tunnel address and the broker's other ports. The broker forwards nothing
// between peers and listens on nothing in the tunnel but its own port.
func TestDeviceReachesOnlyTheTunnelPort(t *testing.T) {
	e := brokertest.New(t)
	victim := e.Enroll("victim-1")
	e.StartConnector(victim, map[string]string{"echo": brokertest.EchoServer(t)}, nil)
	brokertest.WaitFor(t, 20*time.Second, "victim online", func() bool { return e.Broker.Connected("victim-1") })

	s := e.Enroll("rogue-2")
	dev, err := wgnet.New(wgnet.Config{PrivateKey: s.PrivateKey, Address: s.TunnelAddress, ListenAddr: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	bk, _ := wgnet.ParseKey(s.BrokerKey)
	if err := dev.SetPeer(wgnet.Peer{PublicKey: bk, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/16")},
		Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.Port)}); err != nil {
		t.Fatal(err)
	}
	dial := func(to netip.AddrPort) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := dev.DialTCP(ctx, to)
		if err == nil {
			c.Close()
		}
		return err
	}
	// The tunnel port answers: the path itself works.
	if err := dial(netip.AddrPortFrom(s.BrokerAddress, s.BrokerPort)); err != nil {
		t.Fatalf("the broker's tunnel port: %v", err)
	}
	for _, port := range []uint16{22, 80, 443, 7071, 8080, 9090} {
		if err := dial(netip.AddrPortFrom(s.BrokerAddress, port)); err == nil {
			t.Errorf("the broker's tunnel address answers on port %d", port)
		}
	}
	// The victim's connector listens on 7071 for nudges, in its own stack.
	for _, port := range []uint16{7071, 22} {
		if err := dial(netip.AddrPortFrom(victim.TunnelAddress, port)); err == nil {
			t.Errorf("another device's tunnel address %s answers on port %d through the broker", victim.TunnelAddress, port)
		}
	}
}
