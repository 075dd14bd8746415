package wgnet_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/wgnet"
	"github.com/fieldpass/fieldpass/wgnet/wgtest"
)

var (
	brokerAddr    = netip.MustParseAddr("10.77.0.1")
	connectorAddr = netip.MustParseAddr("10.77.0.2")
	loopback      = netip.MustParseAddrPort("127.0.0.1:0")
)

func MustKey(tb testing.TB) wgnet.Key {
	tb.Helper()
	k, err := wgnet.GenerateKey(crand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func MustNew(tb testing.TB, cfg wgnet.Config) *wgnet.Device {
	tb.Helper()
	d, err := wgnet.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func MustSetPeer(tb testing.TB, d *wgnet.Device, p wgnet.Peer) {
	tb.Helper()
	if err := d.SetPeer(p); err != nil {
		tb.Fatal(err)
	}
}

// MustRelay starts a wgtest.Relay on 127.0.0.1 in front of to, closed at
// cleanup: a path whose delay, loss and blackouts the test sets.
func MustRelay(tb testing.TB, to netip.AddrPort) *wgtest.Relay {
	tb.Helper()
	ln, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		tb.Fatal(err)
	}
	r := wgtest.NewRelay(ln, func() (*net.UDPConn, error) {
		return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	})
	tb.Cleanup(func() { r.Close() })
	return r
}

// pair is a broker and a connector device peered over UDP on 127.0.0.1, the
// way Fieldpass uses them: the connector knows the broker's endpoint, the
// broker learns the connector's.
type pair struct {
	broker, connector *wgnet.Device
}

func (p pair) brokerPeer() wgnet.Peer {
	return wgnet.Peer{
		PublicKey:  p.broker.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(brokerAddr, 32)},
		Endpoint:   netip.AddrPortFrom(loopback.Addr(), p.broker.ListenPort()),
	}
}

func (p pair) connectorPeer() wgnet.Peer {
	return wgnet.Peer{
		PublicKey:  p.connector.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(connectorAddr, 32)},
	}
}

// NewPair returns a peered broker and connector; connectorCfg may set fields
// other than the key and addresses. The caller closes them.
func NewPair(tb testing.TB, connectorCfg wgnet.Config) pair {
	tb.Helper()
	var p pair
	p.broker = MustNew(tb, wgnet.Config{PrivateKey: MustKey(tb), Address: brokerAddr, ListenAddr: loopback})
	connectorCfg.PrivateKey = MustKey(tb)
	connectorCfg.Address = connectorAddr
	connectorCfg.ListenAddr = loopback
	p.connector = MustNew(tb, connectorCfg)
	MustSetPeer(tb, p.broker, p.connectorPeer())
	MustSetPeer(tb, p.connector, p.brokerPeer())
	return p
}

// MustHandshake has the connector reach the broker first, as it does in
// production, so that the broker knows where to send.
func (p pair) MustHandshake(tb testing.TB) {
	tb.Helper()
	if err := p.connector.SendKeepalive(); err != nil {
		tb.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		s, _, err := p.broker.Peer(p.connector.PublicKey())
		if err != nil {
			tb.Fatal(err)
		}
		if s.Endpoint.IsValid() && !s.LastHandshake.IsZero() {
			return
		}
	}
	tb.Fatal("no handshake within 5s")
}

func (p pair) Close() {
	p.connector.Close()
	p.broker.Close()
}

// Serve echoes every connection to l until l is closed.
func Serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

func MustListenEcho(tb testing.TB, d *wgnet.Device, port uint16) {
	tb.Helper()
	l, err := d.ListenTCP(port)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go Serve(l)
}

func MustDial(tb testing.TB, d *wgnet.Device, to netip.AddrPort) net.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialTCP(ctx, to)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// echo sends n random bytes through c, reads them back and compares. During
// the transfer, after half the bytes came back, it calls mid if not nil.
func echo(c net.Conn, n int, mid func()) error {
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(rand.Uint32())
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	defer c.SetDeadline(time.Time{})
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		werr <- err
	}()
	got := make([]byte, n)
	half := n / 2
	if mid == nil {
		half = n
	}
	if _, err := io.ReadFull(c, got[:half]); err != nil {
		return fmt.Errorf("read first %d bytes: %w", half, err)
	}
	if mid != nil {
		mid()
	}
	if _, err := io.ReadFull(c, got[half:]); err != nil {
		return fmt.Errorf("read bytes %d..%d: %w", half, n, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, want) {
		return errors.New("echoed bytes differ")
	}
	return nil
}

func TestEchoBothWays(t *testing.T) {
	p := NewPair(t, wgnet.Config{})
	defer p.Close()
	MustListenEcho(t, p.broker, 7)
	MustListenEcho(t, p.connector, 7)
	p.MustHandshake(t)

	const n = 8 << 20
	t.Run("connector to broker", func(t *testing.T) {
		c := MustDial(t, p.connector, netip.AddrPortFrom(brokerAddr, 7))
		start := time.Now()
		if err := echo(c, n, nil); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d bytes echoed in %s", n, time.Since(start))
	})
	t.Run("broker to connector", func(t *testing.T) {
		c := MustDial(t, p.broker, netip.AddrPortFrom(connectorAddr, 7))
		start := time.Now()
		if err := echo(c, n, nil); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d bytes echoed in %s", n, time.Since(start))
	})
}

func TestIPv6Tunnel(t *testing.T) {
	nudged := make(chan struct{}, 1)
	a := netip.MustParseAddr("fd77::1")
	b := netip.MustParseAddr("fd77::2")
	broker := MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: a, ListenAddr: loopback})
	defer broker.Close()
	connector := MustNew(t, wgnet.Config{
		PrivateKey: MustKey(t), Address: b, ListenAddr: loopback,
		NudgePort: 9, OnNudge: func() { nudged <- struct{}{} },
	})
	defer connector.Close()
	MustSetPeer(t, broker, wgnet.Peer{PublicKey: connector.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(b, 128)}})
	MustSetPeer(t, connector, wgnet.Peer{
		PublicKey:  broker.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(a, 128)},
		Endpoint:   netip.AddrPortFrom(loopback.Addr(), broker.ListenPort()),
	})
	MustListenEcho(t, broker, 7)
	if err := echo(MustDial(t, connector, netip.AddrPortFrom(a, 7)), 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := broker.DialTCP(ctx, netip.AddrPortFrom(b, 9)); err == nil {
		c.Close()
	}
	select {
	case <-nudged:
	case <-time.After(2 * time.Second):
		t.Fatal("IPv6 SYN to the nudge port: no nudge")
	}
}

func TestListenPort(t *testing.T) {
	// Find a free port, then ask for it explicitly.
	probe, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	want := uint16(probe.LocalAddr().(*net.UDPAddr).Port)
	probe.Close()

	d := MustNew(t, wgnet.Config{
		PrivateKey: MustKey(t),
		Address:    brokerAddr,
		ListenAddr: netip.AddrPortFrom(loopback.Addr(), want),
	})
	defer d.Close()
	if got := d.ListenPort(); got != want {
		t.Errorf("ListenPort() = %d, want %d", got, want)
	}
	// The socket is bound to 127.0.0.1 only, on that port.
	if _, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback.Addr(), want))); err == nil {
		t.Errorf("port %d on 127.0.0.1 is free, want it bound by the device", want)
	}

	random := MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr, ListenAddr: loopback})
	defer random.Close()
	if random.ListenPort() == 0 {
		t.Error("ListenPort() = 0 with a random port, want the port bound")
	}
}

func TestPeers(t *testing.T) {
	p := NewPair(t, wgnet.Config{})
	defer p.Close()
	MustListenEcho(t, p.broker, 7)
	const n = 1 << 20
	start := time.Now()
	if err := echo(MustDial(t, p.connector, netip.AddrPortFrom(brokerAddr, 7)), n, nil); err != nil {
		t.Fatal(err)
	}

	peers, err := p.broker.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 {
		t.Fatalf("broker has %d peers, want 1", len(peers))
	}
	got := peers[0]
	if got.PublicKey != p.connector.PublicKey() {
		t.Errorf("PublicKey = %s, want %s", got.PublicKey, p.connector.PublicKey())
	}
	if want := netip.AddrPortFrom(loopback.Addr(), p.connector.ListenPort()); got.Endpoint != want {
		t.Errorf("Endpoint = %s, want %s (learned from the connector's packets)", got.Endpoint, want)
	}
	if got.LastHandshake.Before(start.Add(-time.Second)) || got.LastHandshake.After(time.Now()) {
		t.Errorf("LastHandshake = %s, want during the test (started %s)", got.LastHandshake, start)
	}
	if got.RxBytes < n || got.TxBytes < n {
		t.Errorf("RxBytes, TxBytes = %d, %d, want both >= %d", got.RxBytes, got.TxBytes, n)
	}

	one, ok, err := p.broker.Peer(p.connector.PublicKey())
	if err != nil || !ok {
		t.Fatalf("Peer(connector) = %v, %v, want found", ok, err)
	}
	if one.PublicKey != got.PublicKey || one.Endpoint != got.Endpoint {
		t.Errorf("Peer(connector) = %+v, want %+v", one, got)
	}
	if _, ok, err := p.broker.Peer(MustKey(t).Public()); ok || err != nil {
		t.Errorf("Peer(unknown) = %v, %v, want not found, no error", ok, err)
	}

	fresh, _, err := p.connector.Peer(p.broker.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if fresh.PersistentKeepalive != 0 {
		t.Errorf("PersistentKeepalive = %s, want 0", fresh.PersistentKeepalive)
	}
}

func TestRemovePeerAndSetPeer(t *testing.T) {
	p := NewPair(t, wgnet.Config{})
	defer p.Close()
	MustListenEcho(t, p.broker, 7)
	MustListenEcho(t, p.connector, 7)
	if err := echo(MustDial(t, p.connector, netip.AddrPortFrom(brokerAddr, 7)), 1000, nil); err != nil {
		t.Fatal(err)
	}

	if err := p.broker.RemovePeer(p.connector.PublicKey()); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := p.broker.Peer(p.connector.PublicKey()); ok {
		t.Error("removed peer is still listed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if c, err := p.connector.DialTCP(ctx, netip.AddrPortFrom(brokerAddr, 7)); err == nil {
		c.Close()
		t.Fatal("dial to the broker succeeded after the broker removed the connector")
	}
	if err := p.broker.RemovePeer(p.connector.PublicKey()); err != nil {
		t.Errorf("removing an unknown peer: %v, want nil", err)
	}

	// The broker forgot the connector's address with the peer; give it
	// back so that the broker can start the handshake.
	restored := p.connectorPeer()
	restored.Endpoint = netip.AddrPortFrom(loopback.Addr(), p.connector.ListenPort())
	MustSetPeer(t, p.broker, restored)
	if err := echo(MustDial(t, p.broker, netip.AddrPortFrom(connectorAddr, 7)), 1000, nil); err != nil {
		t.Fatalf("broker to connector after SetPeer: %v", err)
	}
	if err := echo(MustDial(t, p.connector, netip.AddrPortFrom(brokerAddr, 7)), 1000, nil); err != nil {
		t.Fatalf("connector to broker after SetPeer: %v", err)
	}
}

func TestResetPeer(t *testing.T) {
	p := NewPair(t, wgnet.Config{})
	defer p.Close()
	MustListenEcho(t, p.broker, 7)
	c := MustDial(t, p.connector, netip.AddrPortFrom(brokerAddr, 7))
	if err := echo(c, 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	before, _, err := p.broker.Peer(p.connector.PublicKey())
	if err != nil {
		t.Fatal(err)
	}

	time.Sleep(10 * time.Millisecond) // so that a new handshake has a later time
	if err := p.broker.ResetPeer(p.connector.PublicKey(), true); err != nil {
		t.Fatal(err)
	}
	after, ok, err := p.broker.Peer(p.connector.PublicKey())
	if err != nil || !ok {
		t.Fatalf("Peer after reset = %v, %v", ok, err)
	}
	if after.Endpoint != before.Endpoint {
		t.Errorf("Endpoint after reset = %s, want %s kept", after.Endpoint, before.Endpoint)
	}
	// The same connection keeps working, over a new session.
	start := time.Now()
	if err := echo(c, 1<<20, nil); err != nil {
		t.Fatalf("echo after reset: %v", err)
	}
	t.Logf("first echo after reset took %s", time.Since(start))
	after, _, err = p.broker.Peer(p.connector.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !after.LastHandshake.After(before.LastHandshake) {
		t.Errorf("LastHandshake after reset = %s, want after %s", after.LastHandshake, before.LastHandshake)
	}

	if err := p.broker.ResetPeer(MustKey(t).Public(), true); !errors.Is(err, wgnet.ErrUnknownPeer) {
		t.Errorf("ResetPeer(unknown) = %v, want ErrUnknownPeer", err)
	}
}

// TestResetPeerAcceptsClockGoneBack is the reason ResetPeer exists: a
// connector whose clock went backwards (rebooted into 1970) is refused until
// the broker resets the peer. wgtest makes the broker accept one initiation
// dated a year ahead, after which the connector's own look exactly like
// those of a device whose clock went back.
func TestResetPeerAcceptsClockGoneBack(t *testing.T) {
	connectorKey := MustKey(t)
	broker := MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr, ListenAddr: loopback})
	defer broker.Close()
	connector := MustNew(t, wgnet.Config{PrivateKey: connectorKey, Address: connectorAddr, ListenAddr: loopback})
	defer connector.Close()
	p := pair{broker: broker, connector: connector}
	MustSetPeer(t, broker, p.connectorPeer())
	MustSetPeer(t, connector, p.brokerPeer())
	MustListenEcho(t, broker, 7)
	brokerEndpoint := netip.AddrPortFrom(loopback.Addr(), broker.ListenPort())

	u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	future := time.Now().Add(365 * 24 * time.Hour)
	if err := wgtest.SendInitiation(u, brokerEndpoint, connectorKey, broker.PublicKey(), future); err != nil {
		t.Fatal(err)
	}

	// ResetPeer on the connector's side stands for its reboot: fresh state,
	// a handshake at once.
	dial := func(timeout time.Duration) error {
		if err := connector.ResetPeer(broker.PublicKey(), true); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := connector.DialTCP(ctx, netip.AddrPortFrom(brokerAddr, 7))
		if err != nil {
			return err
		}
		defer c.Close()
		return echo(c, 1000, nil)
	}
	if err := dial(time.Second); err == nil {
		t.Fatal("connector with an older handshake timestamp got through, want refused")
	}
	if err := broker.ResetPeer(connector.PublicKey(), false); err != nil {
		t.Fatal(err)
	}
	if err := dial(10 * time.Second); err != nil {
		t.Fatalf("after the broker's ResetPeer: %v", err)
	}
}

func TestRebindMidTransfer(t *testing.T) {
	p := NewPair(t, wgnet.Config{})
	defer p.Close()
	MustListenEcho(t, p.connector, 7)
	p.MustHandshake(t)
	// The broker sends to the connector: the direction that stalls until the
	// connector, after its rebind, sends from its new port.
	c := MustDial(t, p.broker, netip.AddrPortFrom(connectorAddr, 7))
	oldPort := p.connector.ListenPort()

	var learned time.Duration
	err := echo(c, 8<<20, func() {
		if err := p.connector.Rebind(); err != nil {
			t.Errorf("Rebind: %v", err)
		}
		start := time.Now()
		for time.Since(start) < 5*time.Second {
			s, _, err := p.broker.Peer(p.connector.PublicKey())
			if err != nil {
				t.Error(err)
				return
			}
			if s.Endpoint.Port() == p.connector.ListenPort() {
				learned = time.Since(start)
				return
			}
			time.Sleep(time.Millisecond)
		}
		learned = -1
	})
	if err != nil {
		t.Fatalf("transfer across a rebind: %v", err)
	}
	t.Logf("broker learned the new endpoint %s after Rebind returned", learned)

	newPort := p.connector.ListenPort()
	if newPort == oldPort {
		t.Errorf("ListenPort() = %d after Rebind, want a new port", newPort)
	}
	got, _, err := p.broker.Peer(p.connector.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.AddrPortFrom(loopback.Addr(), newPort); got.Endpoint != want {
		t.Errorf("broker sees the connector at %s, want %s", got.Endpoint, want)
	}
}

func TestSendKeepalive(t *testing.T) {
	p := NewPair(t, wgnet.Config{})
	defer p.Close()
	if err := p.connector.SendKeepalive(); err != nil {
		t.Fatal(err)
	}
	// A keepalive with no session starts a handshake.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _, err := p.broker.Peer(p.connector.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		if !s.LastHandshake.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no handshake within 5s of SendKeepalive")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNudge(t *testing.T) {
	const nudgePort = 7777
	var nudges atomic.Int32
	nudged := make(chan struct{}, 10)
	p := NewPair(t, wgnet.Config{
		NudgePort: nudgePort,
		OnNudge: func() {
			nudges.Add(1)
			nudged <- struct{}{}
		},
	})
	defer p.Close()
	p.MustHandshake(t)

	dial := func(port uint16) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := p.broker.DialTCP(ctx, netip.AddrPortFrom(connectorAddr, port))
		if err == nil {
			c.Close()
			t.Fatalf("dial to port %d succeeded, want refused (nothing listens)", port)
		}
		if !strings.Contains(err.Error(), "refused") {
			t.Fatalf("dial to port %d: %v, want connection refused", port, err)
		}
	}

	dial(nudgePort + 1)
	time.Sleep(200 * time.Millisecond)
	if n := nudges.Load(); n != 0 {
		t.Fatalf("SYN to another port: %d nudges, want 0", n)
	}

	dial(nudgePort)
	select {
	case <-nudged:
	case <-time.After(2 * time.Second):
		t.Fatal("SYN to the nudge port: no nudge within 2s")
	}

	// A second SYN within the second is merged into the first.
	dial(nudgePort)
	time.Sleep(200 * time.Millisecond)
	if n := nudges.Load(); n != 1 {
		t.Errorf("two SYNs within a second: %d nudges, want 1", n)
	}
}

func TestNudgeIgnoresConnectionsFromTheConnector(t *testing.T) {
	// The connector's own outbound SYNs never pass the inbound path.
	nudged := make(chan struct{}, 1)
	p := NewPair(t, wgnet.Config{NudgePort: 7, OnNudge: func() { nudged <- struct{}{} }})
	defer p.Close()
	MustListenEcho(t, p.broker, 7)
	if err := echo(MustDial(t, p.connector, netip.AddrPortFrom(brokerAddr, 7)), 1000, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-nudged:
		t.Error("nudged by the connector's own connection")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestNewErrors(t *testing.T) {
	key := MustKey(t)
	tests := []struct {
		name string
		cfg  wgnet.Config
	}{
		{"no key", wgnet.Config{Address: brokerAddr}},
		{"no address", wgnet.Config{PrivateKey: key}},
		{"tiny MTU", wgnet.Config{PrivateKey: key, Address: brokerAddr, MTU: 100}},
		{"IPv6 below 1280", wgnet.Config{PrivateKey: key, Address: netip.MustParseAddr("fd00::1"), MTU: 1200}},
		{"nudge without port", wgnet.Config{PrivateKey: key, Address: brokerAddr, OnNudge: func() {}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.ListenAddr = loopback
			d, err := wgnet.New(tt.cfg)
			if err == nil {
				d.Close()
				t.Fatal("New succeeded, want an error")
			}
		})
	}
}

func TestSetPeerErrors(t *testing.T) {
	own := MustKey(t)
	d := MustNew(t, wgnet.Config{PrivateKey: own, Address: brokerAddr, ListenAddr: loopback})
	defer d.Close()
	tests := []struct {
		name string
		peer wgnet.Peer
	}{
		{"zero key", wgnet.Peer{}},
		{"own key", wgnet.Peer{PublicKey: own.Public()}},
		{"negative keepalive", wgnet.Peer{PublicKey: MustKey(t).Public(), PersistentKeepalive: -time.Second}},
		{"keepalive too long", wgnet.Peer{PublicKey: MustKey(t).Public(), PersistentKeepalive: 100000 * time.Second}},
		{"invalid prefix", wgnet.Peer{PublicKey: MustKey(t).Public(), AllowedIPs: []netip.Prefix{{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := d.SetPeer(tt.peer); err == nil {
				t.Error("SetPeer succeeded, want an error")
			}
		})
	}
}

func TestManyPeers(t *testing.T) {
	d := MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr, ListenAddr: loopback})
	defer d.Close()
	const n = 2000
	keys := make(map[wgnet.Key]bool, n)
	start := time.Now()
	for i := range n {
		k := MustKey(t).Public()
		keys[k] = true
		MustSetPeer(t, d, wgnet.Peer{
			PublicKey:  k,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 78, byte(i >> 8), byte(i)}), 32)},
		})
	}
	t.Logf("SetPeer x %d: %s", n, time.Since(start))

	start = time.Now()
	peers, err := d.Peers()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Peers() with %d peers: %s", n, time.Since(start))
	if len(peers) != n {
		t.Fatalf("Peers() returned %d, want %d", len(peers), n)
	}
	for _, s := range peers {
		if !keys[s.PublicKey] {
			t.Fatalf("Peers() returned unknown key %s", s.PublicKey)
		}
		if s.PersistentKeepalive != 0 || !s.LastHandshake.IsZero() || s.Endpoint.IsValid() {
			t.Fatalf("new peer %+v, want no keepalive, handshake or endpoint", s)
		}
	}
	// A broker's presence loop reads into its previous slice.
	again, err := d.AppendPeers(peers[:0])
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != n || &again[0] != &peers[0] {
		t.Errorf("AppendPeers(peers[:0]): %d peers, same array %v; want %d in the same array", len(again), &again[0] == &peers[0], n)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	p := NewPair(t, wgnet.Config{NudgePort: 9, OnNudge: func() {}})
	l, err := p.broker.ListenTCP(7)
	if err != nil {
		t.Fatal(err)
	}
	go Serve(l)
	c := MustDial(t, p.connector, netip.AddrPortFrom(brokerAddr, 7))
	if err := echo(c, 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	// Close with the connection and listener still open: Close must end them.
	p.Close()
	if err := p.broker.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("Read on a connection of a closed device succeeded")
	}

	var now int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= before {
			return
		}
	}
	buf := make([]byte, 1<<20)
	t.Errorf("%d goroutines after Close, %d before:\n%s", now, before, buf[:runtime.Stack(buf, true)])
}

// A dial to a peer that never answers leaves its SYN in wireguard-go, in a
// 64 KiB buffer, for the 90 s of handshake attempts; DropQueued frees it
// (a broker's nudges to the devices of a restart that are not there).
func TestDropQueued(t *testing.T) {
	d := MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr, ListenAddr: loopback})
	defer d.Close()
	nowhere, err := net.ListenPacket("udp", "127.0.0.1:0") // takes the handshakes, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer nowhere.Close()
	ep := netip.MustParseAddrPort(nowhere.LocalAddr().String())
	const n = 200
	keys := make([]wgnet.Key, n)
	var wg sync.WaitGroup
	for i := range n {
		keys[i] = MustKey(t).Public()
		addr := netip.AddrFrom4([4]byte{10, 78, byte(i >> 8), byte(i)})
		MustSetPeer(t, d, wgnet.Peer{PublicKey: keys[i], AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, 32)}, Endpoint: ep})
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if c, err := d.DialTCP(ctx, netip.AddrPortFrom(addr, 9)); err == nil {
				c.Close()
				t.Errorf("dial %s answered: nothing is there", addr)
			}
		}()
	}
	wg.Wait()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC() // pooled buffers survive one collection
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	for _, k := range keys {
		d.DropQueued(k)
	}
	after := heap()
	t.Logf("heap in use with %d unanswered dials queued: %.1f MiB; after DropQueued: %.1f MiB", n, float64(before)/(1<<20), float64(after)/(1<<20))
	if before < after || before-after < n*32<<10 {
		t.Errorf("DropQueued freed %d KiB for %d queued SYNs, want at least half of their 64 KiB buffers", (int64(before)-int64(after))>>10, n)
	}
}
