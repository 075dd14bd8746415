package broker_test

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// A connector says which services it exposes (names only) in its hello;
// the broker keeps them on the device, and a grant to a service the device
// is known not to expose is refused unless asked for.
func TestConnectorServicesKnownToGrants(t *testing.T) {
	e := brokertest.New(t)
	echo := brokertest.EchoServer(t)
	e.StartConnector(e.Enroll("pump-1"), map[string]string{"web": echo, "ssh": echo}, nil)
	ctx := context.Background()
	var d *fieldpass.Device
	brokertest.WaitFor(t, 20*time.Second, "the device's services recorded", func() bool {
		var err error
		d, err = e.DB.Device(ctx, "pump-1")
		return err == nil && d.Services != nil
	})
	if want := []string{"ssh", "web"}; !reflect.DeepEqual(d.Services, want) {
		t.Fatalf("services %q, want %q", d.Services, want)
	}

	admin, err := e.DB.EnsureUser(ctx, testOperator, "admin@example.com", []fieldpass.Role{fieldpass.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	c := &fieldpass.Caller{User: admin}
	rules := access.New(access.Config{DB: e.DB})
	grant := func(services ...string) fieldpass.Grant {
		return fieldpass.Grant{Subject: engineer, Devices: []string{"pump-1"}, Services: services,
			Start: time.Now(), End: time.Now().Add(time.Hour), Reason: "test"}
	}
	_, err = rules.CreateGrant(ctx, c, grant("ssh", "sssh"))
	if fieldpass.ErrorCode(err) != fieldpass.EINVALID {
		t.Fatalf("grant to a service the device lacks: %v, want invalid", err)
	}
	for _, want := range []string{"pump-1 does not expose sssh", "exposes ssh, web", "--allow-unknown"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := rules.CreateGrant(ctx, c, grant("sssh"), access.AllowUnknown); err != nil {
		t.Fatalf("with AllowUnknown: %v", err)
	}
	if _, err := rules.CreateGrant(ctx, c, grant("ssh", "web")); err != nil {
		t.Fatalf("grant to what the device exposes: %v", err)
	}
	// Label selectors cover devices to come: not checked.
	sel := grant("nope")
	sel.Devices, sel.Selector = nil, map[string]string{"site": "north"}
	if _, err := rules.CreateGrant(ctx, c, sel); err != nil {
		t.Fatalf("grant by selector: %v", err)
	}
}

// A connector from before announcements says hello as version 1: it still
// connects, and its device's services stay unknown, which no grant check
// refuses.
func TestOldHelloServicesUnknown(t *testing.T) {
	e := brokertest.New(t)
	s := e.Enroll("old-1")
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
	conn, err := dev.DialTCP(ctx, netip.AddrPortFrom(s.BrokerAddress, s.BrokerPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id, _ := tunnel.ParseID(s.DeviceID)
	var raw strings.Builder
	tunnel.WriteHello(&raw, tunnel.Hello{DeviceID: id, ConnectorVersion: "0.9.0"})
	if raw.String()[2] != 1 {
		t.Fatal("a hello without services is not version 1")
	}
	if _, err := conn.Write([]byte(raw.String())); err != nil {
		t.Fatal(err)
	}
	if r, err := tunnel.ReadHelloReply(conn); err != nil || r.Code != tunnel.HelloOK {
		t.Fatalf("hello: %+v, %v", r, err)
	}
	brokertest.WaitFor(t, 10*time.Second, "device online", func() bool { return e.Broker.Connected("old-1") })
	d, err := e.DB.Device(context.Background(), "old-1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Services != nil {
		t.Fatalf("services %q, want unknown", d.Services)
	}
}
