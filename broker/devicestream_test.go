package broker_test

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// TestDeviceOpenedStreamsRefused: the protocol lets only the broker open
// streams. A device (or anyone holding its key) that opens streams itself
// must not make the broker buffer their data: issue 10 found 256 streams
// waiting unaccepted, each buffering up to 256 KiB, about 64 MiB per
// connection. The broker refuses at once by closing that tunnel.
func TestDeviceOpenedStreamsRefused(t *testing.T) {
	e := brokertest.New(t)
	s := e.Enroll("rogue-1")
	dev, err := wgnet.New(wgnet.Config{PrivateKey: s.PrivateKey, Address: s.TunnelAddress, ListenAddr: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	bk, _ := wgnet.ParseKey(s.BrokerKey)
	if err := dev.SetPeer(wgnet.Peer{PublicKey: bk, AllowedIPs: []netip.Prefix{netip.PrefixFrom(s.BrokerAddress, 32)},
		Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.Port)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dev.DialTCP(ctx, netip.AddrPortFrom(s.BrokerAddress, s.BrokerPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, err := tunnel.ParseID(s.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	if err := tunnel.WriteHello(c, tunnel.Hello{DeviceID: id, ConnectorVersion: "rogue"}); err != nil {
		t.Fatal(err)
	}
	if r, err := tunnel.ReadHelloReply(c); err != nil || r.Code != tunnel.HelloOK {
		t.Fatalf("hello: %+v, %v", r, err)
	}
	sess, err := yamux.Server(c, tunnel.YamuxConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	brokertest.WaitFor(t, 10*time.Second, "device online", func() bool { return e.Broker.Connected("rogue-1") })

	// What a device holding its key can try: many streams, each filled to
	// yamux's initial window, none of which the broker ever reads.
	chunk := bytes.Repeat([]byte{'x'}, 64<<10)
	start := time.Now()
	opened, wrote := 0, 0
	for i := 0; i < 64 && !sess.IsClosed(); i++ {
		st, err := sess.OpenStream()
		if err != nil {
			break
		}
		opened++
		st.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		for j := 0; j < 4; j++ {
			n, err := st.Write(chunk)
			wrote += n
			if err != nil {
				break
			}
		}
	}
	select {
	case <-sess.CloseChan():
	case <-time.After(2 * time.Second):
		t.Fatalf("broker still holds the tunnel 2s after the device opened %d streams and wrote %d KiB into them", opened, wrote>>10)
	}
	t.Logf("tunnel closed %s after the first device-opened stream (%d opened, %d KiB written)", time.Since(start).Round(time.Millisecond), opened, wrote>>10)
	// What the device wrote is what its send windows allowed; the broker
	// discards the data of streams it reset, and kept at most the first
	// stream's until the tunnel closed.
	brokertest.WaitFor(t, 5*time.Second, "device offline", func() bool { return !e.Broker.Connected("rogue-1") })
}
