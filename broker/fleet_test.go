package broker_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
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

// startFleetBrokerCtx is startFleetBroker until ctx ends, on db, its
// configuration changed by mods.
func startFleetBrokerCtx(t testing.TB, parent context.Context, e *brokertest.Env, ca *brokertest.LinkCA, id string, db *postgres.DB, mods ...func(*broker.Config)) *fleetBroker {
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
	cfg := broker.Config{
		ID: id, PrivateKey: e.Key, WGListen: netip.MustParseAddrPort("127.0.0.1:0"),
		PresenceInterval: 200 * time.Millisecond, Logger: brokertest.Logger(),
		Fleet: &broker.FleetConfig{LeaseTTL: 3 * time.Second, PeerAddr: ln.Addr().String(), Links: links},
	}
	for _, mod := range mods {
		mod(&cfg)
	}
	b, err := broker.New(ctx, cfg, db)
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
	user, g := engineerGranted(t, e, "pump-1", "echo")

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
	user, _ := engineerGranted(t, e, "pump-1", "echo")
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

// crashableBroker is a fleet broker on a database pool of its own, which
// crash stops as a killed process would: no clean stop reaches the roll,
// its leases and presence are left as they were.
type crashableBroker struct {
	*fleetBroker
	db     *postgres.DB
	cancel context.CancelFunc
}

func startCrashableBroker(t *testing.T, e *brokertest.Env, ca *brokertest.LinkCA, id string, mods ...func(*broker.Config)) *crashableBroker {
	t.Helper()
	db, err := postgres.Open(context.Background(), e.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &crashableBroker{fleetBroker: startFleetBrokerCtx(t, ctx, e, ca, id, db, mods...), db: db, cancel: cancel}
}

// crash cuts the broker from the database first, so that nothing it does
// while stopping (the roll's clean stop, releasing leases, marking its
// devices offline) reaches it, then stops it.
func (c *crashableBroker) crash() {
	c.db.Close()
	c.cancel()
}

// holders maps each device of names to the broker holding its live lease
// ("" for none).
func holders(t *testing.T, e *brokertest.Env, ids map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, id := range ids {
		l, ok, err := e.DB.DeviceHolder(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out[name] = l.BrokerID
		} else {
			out[name] = ""
		}
	}
	return out
}

// startDevicesAt enrols n devices and starts their connectors with only
// fb's endpoint: once fb is gone, a device comes back only when a broker
// of the fleet calls it back (its own retries would find fb again). It
// waits until fb holds them all and returns their ids by name.
func startDevicesAt(t *testing.T, e *brokertest.Env, fb *fleetBroker, n int) map[string]string {
	t.Helper()
	ids := map[string]string{}
	echo := brokertest.EchoServer(t)
	for i := range n {
		name := fmt.Sprintf("pump-%d", i+1)
		s := e.Enroll(name)
		ids[name] = s.DeviceID
		e.StartConnector(s, map[string]string{"echo": echo}, func(c *connector.Config) {
			c.State.Endpoints = []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), fb.b.ListenPort()).String()}
			c.DialTimeout = time.Second
			c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
		})
	}
	// Held, and where each was heard recorded (at once after its hello,
	// by the presence pass it asks for): a broker that dies can be
	// called back for only the devices whose endpoint it recorded.
	brokertest.WaitFor(t, 30*time.Second, fmt.Sprintf("%s to hold all %d devices, their endpoints recorded", fb.b.ID(), n), func() bool {
		for name, h := range holders(t, e, ids) {
			d, err := e.DB.Device(context.Background(), name)
			if h != fb.b.ID() || err != nil || d.Presence.BrokerID != fb.b.ID() || d.Presence.Endpoint == "" {
				return false
			}
		}
		return true
	})
	return ids
}

// waitHolders waits until the devices' holders satisfy ok and returns
// them; if they never do, it fails with what each device's lease,
// presence and callback say.
func waitHolders(t *testing.T, e *brokertest.Env, ids map[string]string, timeout time.Duration, what string, ok func(map[string]string) bool) map[string]string {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		hs := holders(t, e, ids)
		if ok(hs) {
			return hs
		}
		if time.Now().After(deadline) {
			var sb strings.Builder
			cbs := map[string]postgres.Callback{}
			for _, br := range []string{"broker-a", "broker-b", "broker-c"} {
				got, _ := e.DB.CallbacksOf(ctx, br)
				for _, c := range got {
					cbs[c.DeviceID] = c
				}
			}
			for name, id := range ids {
				d, _ := e.DB.Device(ctx, name)
				fmt.Fprintf(&sb, "\n  %s: held by %q; presence %+v; callback %+v", name, hs[name], d.Presence, cbs[id])
			}
			t.Fatalf("after %s, not yet %s:%s", timeout, what, sb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countHolders counts devices per holder.
func countHolders(hs map[string]string) map[string]int {
	n := map[string]int{}
	for _, h := range hs {
		n[h]++
	}
	return n
}

// openCallbacks counts the devices brokerID is to call back that are not
// back yet, and of those how many it has taken.
func openCallbacks(t *testing.T, e *brokertest.Env, brokerID string) (all, taken int) {
	t.Helper()
	cbs, err := e.DB.CallbacksOf(context.Background(), brokerID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cbs {
		if !c.Taken.IsZero() {
			taken++
		}
	}
	return len(cbs), taken
}

// Three brokers; broker-b holds every device and dies without a clean
// stop. The janitor (at a or c) spreads its devices over the two
// survivors, each calls back only its share, and the devices end up held
// half by each, each by one broker, served by exactly that one.
func TestFleetDeadBrokerDevicesSpread(t *testing.T) {
	const n = 10
	e := brokertest.New(t)
	e.Stop()
	ca := brokertest.NewLinkCA(t)
	a := startFleetBroker(t, e, ca, "broker-a")
	c := startFleetBroker(t, e, ca, "broker-c")
	b := startCrashableBroker(t, e, ca, "broker-b")
	ids := startDevicesAt(t, e, b.fleetBroker, n)

	t0 := time.Now()
	b.crash()
	hs := waitHolders(t, e, ids, 60*time.Second, "every device held by a survivor", func(hs map[string]string) bool {
		for _, h := range hs {
			if h != "broker-a" && h != "broker-c" {
				return false
			}
		}
		return true
	})
	t.Logf("all %d devices held again %s after broker-b crashed: %v", n, time.Since(t0).Round(time.Millisecond), countHolders(hs))
	// Settled: nothing moves any more (no survivor pulls another's device).
	time.Sleep(2 * time.Second)
	hs2 := holders(t, e, ids)
	for name, h := range hs {
		if hs2[name] != h {
			t.Errorf("%s moved from %s to %q after the failover", name, h, hs2[name])
		}
	}
	got := countHolders(hs2)
	if got["broker-a"] != n/2 || got["broker-c"] != n/2 {
		t.Errorf("devices per survivor %v, want %d each", got, n/2)
	}
	for name, id := range ids {
		if a.b.Serves(id) == c.b.Serves(id) {
			t.Errorf("%s (held by %s): served by broker-a %v, broker-c %v; want exactly one", name, hs2[name], a.b.Serves(id), c.b.Serves(id))
		}
	}
	noCallbacksLeft(t, e)
}

// The survivor given part of a dead broker's devices dies before it has
// called them all back: when it is swept in turn, the devices it had not
// brought back are given to the last broker alive, with its own.
func TestFleetCallbackBrokerDiesMidway(t *testing.T) {
	const n = 6
	e := brokertest.New(t)
	e.Stop()
	ca := brokertest.NewLinkCA(t)
	a := startFleetBroker(t, e, ca, "broker-a")
	// broker-c calls back one device a second: it dies with most of its
	// share still to call.
	c := startCrashableBroker(t, e, ca, "broker-c", func(cfg *broker.Config) { cfg.NudgeRate = 1 })
	b := startCrashableBroker(t, e, ca, "broker-b")
	ids := startDevicesAt(t, e, b.fleetBroker, n)

	b.crash()
	var left int
	brokertest.WaitFor(t, 30*time.Second, "broker-c to take its share", func() bool {
		all, taken := openCallbacks(t, e, "broker-c")
		left = all
		return all > 0 && taken == all
	})
	c.crash()
	t.Logf("broker-c crashed with %d of its share not back yet", left)
	t0 := time.Now()
	waitHolders(t, e, ids, 60*time.Second, "every device held by broker-a", func(hs map[string]string) bool {
		return countHolders(hs)["broker-a"] == n
	})
	t.Logf("all %d devices at broker-a %s after broker-c crashed mid-way", n, time.Since(t0).Round(time.Millisecond))
	// Its copy of a lease it has just taken follows the database's within
	// the acquire's round trip.
	for name, id := range ids {
		brokertest.WaitFor(t, 2*time.Second, name+" served by broker-a, which holds it", func() bool { return a.b.Serves(id) })
	}
	noCallbacksLeft(t, e)
}

// broker-b, holding every device, stops cleanly (a rolling restart): it
// hands its devices to the two others, half each, which call them back at
// once. Its devices know only its endpoint, so without the hand-off none
// would come back.
func TestFleetCleanStopHandsDevicesOff(t *testing.T) {
	const n = 10
	e := brokertest.New(t)
	e.Stop()
	ca := brokertest.NewLinkCA(t)
	a := startFleetBroker(t, e, ca, "broker-a")
	c := startFleetBroker(t, e, ca, "broker-c")
	b := startCrashableBroker(t, e, ca, "broker-b")
	ids := startDevicesAt(t, e, b.fleetBroker, n)

	t0 := time.Now()
	b.cancel() // a clean stop: the database stays
	hs := waitHolders(t, e, ids, 30*time.Second, "every device held by broker-a or broker-c", func(hs map[string]string) bool {
		for _, h := range hs {
			if h != "broker-a" && h != "broker-c" {
				return false
			}
		}
		return true
	})
	t.Logf("all %d devices held again %s after broker-b began its clean stop: %v", n, time.Since(t0).Round(time.Millisecond), countHolders(hs))
	if got := countHolders(hs); got["broker-a"] != n/2 || got["broker-c"] != n/2 {
		t.Errorf("devices per broker %v, want %d each", got, n/2)
	}
	for name, id := range ids {
		brokertest.WaitFor(t, 2*time.Second, name+" served by its holder alone", func() bool { return a.b.Serves(id) != c.b.Serves(id) })
	}
}

// noCallbacksLeft checks that no broker of the test fleet has a callback
// left to make once every device came back.
func noCallbacksLeft(t *testing.T, e *brokertest.Env) {
	t.Helper()
	for _, br := range []string{"broker-a", "broker-b", "broker-c"} {
		if left, _ := openCallbacks(t, e, br); left != 0 {
			t.Errorf("%d callbacks to %s left after every device came back", left, br)
		}
	}
}
