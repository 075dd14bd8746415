package broker_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/brokerlink"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/postgres"
)

// fleetBroker is one broker of a test fleet: its broker, sessions and link
// listener.
type fleetBroker struct {
	b    *broker.Broker
	m    *broker.Sessions
	addr string // the link's address
}

// startFleetBroker starts a broker with id on e's database and key, one of
// the fleet ca certifies, with its session manager and link server.
func startFleetBroker(t testing.TB, e *brokertest.Env, ca *brokertest.LinkCA, id string) *fleetBroker {
	t.Helper()
	return startFleetBrokerCtx(t, context.Background(), e, ca, id, e.DB)
}

// startFleetBrokerCtx is startFleetBroker until ctx ends.
func startFleetBrokerCtx(t testing.TB, parent context.Context, e *brokertest.Env, ca *brokertest.LinkCA, id string, db *postgres.DB) *fleetBroker {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	serverTLS, clientTLS := ca.Configs(t, id)
	links, err := brokerlink.NewDialer(clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(ctx, broker.Config{
		ID: id, PrivateKey: e.Key, WGListen: netip.MustParseAddrPort("127.0.0.1:0"),
		PresenceInterval: 200 * time.Millisecond, Logger: brokertest.Logger(),
		Fleet: &broker.FleetConfig{LeaseTTL: 3 * time.Second, PeerAddr: ln.Addr().String(), Links: links},
	}, db)
	if err != nil {
		t.Fatal(err)
	}
	m, err := broker.NewSessions(ctx, b, db, broker.SessionsConfig{Logger: brokertest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := brokerlink.NewServer(m, serverTLS, brokertest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 3)
	go func() { b.Serve(ctx); done <- struct{}{} }()
	go func() { m.Run(ctx); done <- struct{}{} }()
	go func() { srv.Serve(ctx, ln); done <- struct{}{} }()
	stopped := make(chan struct{})
	go func() {
		<-ctx.Done()
		for range 3 {
			<-done
		}
		b.Close()
		links.Close()
		close(stopped)
	}()
	t.Cleanup(func() { cancel(); <-stopped })
	return &fleetBroker{b: b, m: m, addr: ln.Addr().String()}
}

// A person's connect reaches broker A; the device is connected to broker
// B. A carries it over the link: one session row, recorded by B (which
// holds the device) and naming A (which served the person); bytes flow;
// a revocation decided at B ends the person's session at A at once.
func TestFleetConnectCarriedToHolder(t *testing.T) {
	e := brokertest.New(t)
	e.Stop() // the harness's own broker stays out: only A and B serve
	ca := brokertest.NewLinkCA(t)
	a := startFleetBroker(t, e, ca, "broker-a")
	b := startFleetBroker(t, e, ca, "broker-b")
	ctx := context.Background()

	echo := brokertest.EchoServer(t)
	s := e.Enroll("pump-1")
	// The device dials B.
	e.StartConnector(s, map[string]string{"echo": echo}, func(c *connector.Config) {
		c.State.Endpoints = []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.b.ListenPort()).String()}
	})
	brokertest.WaitFor(t, 20*time.Second, "broker-b to hold pump-1", func() bool {
		d, err := e.DB.Device(ctx, "pump-1")
		if err != nil {
			return false
		}
		l, ok, _ := e.DB.DeviceHolder(ctx, d.ID)
		return ok && l.BrokerID == "broker-b"
	})
	user, err := e.DB.EnsureUser(ctx, testOperator, engineer, []fieldpass.Role{fieldpass.RoleEngineer})
	if err != nil {
		t.Fatal(err)
	}
	g, err := e.DB.CreateGrant(ctx, testOperator, fieldpass.Grant{
		Subject: engineer, Devices: []string{"pump-1"}, Services: []string{"echo"}, End: time.Now().Add(time.Hour), Reason: "test",
	}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	sess, err := a.m.Open(ctx, &fieldpass.Caller{User: user}, "pump-1", "echo", "192.0.2.7")
	if err != nil {
		t.Fatalf("open at broker-a for a device held by broker-b: %v", err)
	}
	st, err := sess.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("through two brokers")
	if _, err := st.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(st, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo = %q, %v", got, err)
	}
	t.Logf("cross-broker open + stream + echo: %s", time.Since(t0))

	row, err := e.DB.Session(ctx, sess.ID())
	if err != nil {
		t.Fatal(err)
	}
	if row.BrokerID != "broker-b" || row.ServedBy != "broker-a" || row.ClientAddr != "192.0.2.7" {
		t.Fatalf("row: broker %q served by %q client %q; want broker-b, broker-a, 192.0.2.7", row.BrokerID, row.ServedBy, row.ClientAddr)
	}

	// Revoked: B ends it, A's person learns within a second.
	if _, err := e.DB.RevokeGrant(ctx, testOperator, g.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Done():
	case <-time.After(time.Second):
		t.Fatal("the serving broker's session outlived the revocation by a second")
	}
	if sess.Reason() != fieldpass.EndGrantRevoked {
		t.Fatalf("reason = %q, want grant_revoked", sess.Reason())
	}
	brokertest.WaitFor(t, 5*time.Second, "the row to end once", func() bool {
		r, err := e.DB.Session(ctx, sess.ID())
		return err == nil && r.EndReason == fieldpass.EndGrantRevoked
	})
}

// Broker B, holding the device, stops: its lease ends with it, the device
// moves to broker A (its next endpoint), A takes the lease and serves it;
// the person's relayed session ended with B, and B's row is ended once.
func TestFleetDeviceMovesWhenItsBrokerStops(t *testing.T) {
	e := brokertest.New(t)
	e.Stop()
	ca := brokertest.NewLinkCA(t)
	a := startFleetBroker(t, e, ca, "broker-a")
	ctx := context.Background()
	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	b := startFleetBrokerCtx(t, bctx, e, ca, "broker-b", e.DB)

	s := e.Enroll("pump-1")
	ep := func(fb *fleetBroker) string {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), fb.b.ListenPort()).String()
	}
	e.StartConnector(s, map[string]string{"echo": brokertest.EchoServer(t)}, func(c *connector.Config) {
		c.State.Endpoints = []string{ep(b), ep(a)}
		c.DialTimeout = time.Second
		c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
	})
	holder := func() string {
		d, err := e.DB.Device(ctx, "pump-1")
		if err != nil {
			return ""
		}
		l, ok, _ := e.DB.DeviceHolder(ctx, d.ID)
		if !ok {
			return ""
		}
		return l.BrokerID
	}
	brokertest.WaitFor(t, 20*time.Second, "broker-b to hold pump-1", func() bool { return holder() == "broker-b" })
	user, err := e.DB.EnsureUser(ctx, testOperator, engineer, []fieldpass.Role{fieldpass.RoleEngineer})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.CreateGrant(ctx, testOperator, fieldpass.Grant{
		Subject: engineer, Devices: []string{"pump-1"}, Services: []string{"echo"}, End: time.Now().Add(time.Hour), Reason: "test",
	}, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	relayed, err := a.m.Open(ctx, &fieldpass.Caller{User: user}, "pump-1", "echo", "192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	stopB()
	select {
	case <-relayed.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the relayed session outlived its holder")
	}
	brokertest.WaitFor(t, 30*time.Second, "broker-a to hold pump-1", func() bool { return holder() == "broker-a" })
	t.Logf("device held by broker-a %s after broker-b stopped", time.Since(t0))
	r, err := e.DB.Session(ctx, relayed.ID())
	if err != nil || r.Open() {
		t.Fatalf("broker-b's row: %+v, %v; want ended", r, err)
	}
	// Served by A itself now.
	brokertest.WaitFor(t, 10*time.Second, "a session at broker-a", func() bool {
		sess, err := a.m.Open(ctx, &fieldpass.Caller{User: user}, "pump-1", "echo", "192.0.2.7")
		if err != nil {
			return false
		}
		defer sess.End(fieldpass.EndClientClosed)
		row, err := e.DB.Session(ctx, sess.ID())
		return err == nil && row.BrokerID == "broker-a" && row.ServedBy == ""
	})
}

// Broker B, holding the device, loses the database (a partition): by its
// own clock its lease runs out, it lets go of the device and refuses it at
// hello, and the device moves to broker A, which holds it; never both.
func TestFleetBrokerCutOffFromDatabase(t *testing.T) {
	e := brokertest.New(t)
	e.Stop()
	ca := brokertest.NewLinkCA(t)
	ctx := context.Background()
	a := startFleetBroker(t, e, ca, "broker-a")
	bdb, err := postgres.Open(ctx, e.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	b := startFleetBrokerCtx(t, ctx, e, ca, "broker-b", bdb)
	s := e.Enroll("pump-1")
	ep := func(fb *fleetBroker) string {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), fb.b.ListenPort()).String()
	}
	e.StartConnector(s, map[string]string{"echo": brokertest.EchoServer(t)}, func(c *connector.Config) {
		c.State.Endpoints = []string{ep(b), ep(a)}
		c.DialTimeout = time.Second
		c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
	})
	d, err := e.DB.Device(ctx, "pump-1")
	if err != nil {
		t.Fatal(err)
	}
	holder := func() string {
		l, ok, _ := e.DB.DeviceHolder(ctx, d.ID)
		if !ok {
			return ""
		}
		return l.BrokerID
	}
	brokertest.WaitFor(t, 20*time.Second, "broker-b to hold pump-1", func() bool { return holder() == "broker-b" })

	t0 := time.Now()
	bdb.Close() // B is cut off from the database
	// Until B lets go, nobody else may hold the device; once A holds it,
	// B must already have stopped serving it.
	for holder() != "broker-a" {
		if time.Since(t0) > 30*time.Second {
			t.Fatal("broker-a never took the device over")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b.b.Serves(d.ID) {
		t.Fatal("two holders: broker-b still serves the device broker-a holds")
	}
	t.Logf("device held by broker-a %s after broker-b lost its database", time.Since(t0))
}
