package connector_test

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// oldBroker answers hellos as a broker before service announcements did:
// it reads the fixed part, refuses any version but 1 with HelloVersion,
// and otherwise answers ok and runs yamux. It sends what it accepted on
// hellos.
func oldBroker(t *testing.T, ln net.Listener, hellos chan<- byte) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var fixed [22]byte
			if _, err := io.ReadFull(c, fixed[:]); err != nil {
				return
			}
			if fixed[2] != 1 {
				tunnel.WriteHelloReply(c, tunnel.HelloReply{Code: tunnel.HelloVersion, Reason: "unsupported tunnel protocol version 2 (this end speaks 1)"})
				hellos <- fixed[2]
				return
			}
			if _, err := io.ReadFull(c, make([]byte, fixed[21])); err != nil {
				return
			}
			tunnel.WriteHelloReply(c, tunnel.HelloReply{Code: tunnel.HelloOK})
			sess, err := yamux.Client(c, tunnel.YamuxConfig(0))
			if err != nil {
				return
			}
			hellos <- fixed[2]
			<-sess.CloseChan()
		}()
	}
}

// A connector that announces its services falls back at once to a
// version 1 hello when the broker predates announcements, and connects.
func TestConnectorFallsBackToOldHello(t *testing.T) {
	bkey, _ := wgnet.GenerateKey(rand.Reader)
	dkey, _ := wgnet.GenerateKey(rand.Reader)
	baddr, daddr := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")
	b, err := wgnet.New(wgnet.Config{PrivateKey: bkey, Address: baddr, ListenAddr: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.SetPeer(wgnet.Peer{PublicKey: dkey.Public(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(daddr, 32)}}); err != nil {
		t.Fatal(err)
	}
	ln, err := b.ListenTCP(tunnel.BrokerPort)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hellos := make(chan byte, 4)
	go oldBroker(t, ln, hellos)

	c, err := connector.New(connector.Config{
		State: &connector.State{
			DeviceID: "0f8fad5b-d9cb-469f-a165-70867728950e", DeviceName: "pump-1",
			TunnelAddress: daddr, BrokerAddress: baddr, BrokerPort: tunnel.BrokerPort,
			BrokerKey: bkey.Public().String(), Endpoints: []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.ListenPort()).String()},
			PrivateKey: dkey,
		},
		Services:    map[string]string{"ssh": "127.0.0.1:22"},
		ListenAddr:  netip.MustParseAddrPort("127.0.0.1:0"),
		NetworkPoll: -1,
		MinBackoff:  time.Hour, // a fallback that waited would time the test out
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for _, want := range []byte{2, 1} {
		select {
		case got := <-hellos:
			if got != want {
				t.Fatalf("hello version %d, want %d", got, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no hello of version %d", want)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !c.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("not connected after the fallback")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
