package wgnet_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/wgnet"
)

// TestSetPersistentKeepalive changes the keepalive of a peer in use: the
// session, its endpoint and allowed IPs stay, and a connection through it
// carries on without a new handshake.
func TestSetPersistentKeepalive(t *testing.T) {
	p := NewPair(t, wgnet.Config{})
	defer p.Close()
	MustListenEcho(t, p.broker, 7)
	c := MustDial(t, p.connector, netip.AddrPortFrom(brokerAddr, 7))
	if err := echo(c, 64<<10, nil); err != nil {
		t.Fatal(err)
	}
	k := p.broker.PublicKey()
	before, _, err := p.connector.Peer(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{2 * time.Minute, 1500 * time.Millisecond, 0} {
		if err := p.connector.SetPersistentKeepalive(k, d); err != nil {
			t.Fatal(err)
		}
		after, ok, err := p.connector.Peer(k)
		if err != nil || !ok {
			t.Fatalf("Peer after set: %v, %v", ok, err)
		}
		want := (d + time.Second - 1) / time.Second * time.Second
		if after.PersistentKeepalive != want {
			t.Errorf("keepalive after setting %s: got %s, want %s", d, after.PersistentKeepalive, want)
		}
		if after.Endpoint != before.Endpoint || !after.LastHandshake.Equal(before.LastHandshake) {
			t.Errorf("after setting %s: endpoint %s, handshake %s; want %s, %s kept", d, after.Endpoint, after.LastHandshake, before.Endpoint, before.LastHandshake)
		}
	}
	if err := echo(c, 64<<10, nil); err != nil {
		t.Fatalf("echo after keepalive changes: %v", err)
	}

	if err := p.connector.SetPersistentKeepalive(MustKey(t).Public(), time.Minute); !errors.Is(err, wgnet.ErrUnknownPeer) {
		t.Errorf("unknown peer: got %v, want ErrUnknownPeer (and no peer made)", err)
	}
	if ps, _ := p.connector.Peers(); len(ps) != 1 {
		t.Errorf("peers after setting an unknown one: got %d, want 1", len(ps))
	}
	for _, d := range []time.Duration{-time.Second, 65536 * time.Second} {
		if err := p.connector.SetPersistentKeepalive(k, d); err == nil {
			t.Errorf("keepalive %s: no error", d)
		}
	}
}
