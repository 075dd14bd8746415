package broker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector"
)

// peerKeepalive is the persistent keepalive of the connector's WireGuard
// peer for the broker: what its device actually sends by.
func peerKeepalive(tb testing.TB, e *brokertest.Env, c *brokertest.Connector) time.Duration {
	tb.Helper()
	st, ok, err := c.Device().Peer(e.Broker.PublicKey())
	if err != nil || !ok {
		tb.Fatalf("connector's broker peer: ok %v, err %v", ok, err)
	}
	return st.PersistentKeepalive
}

func waitKeepalive(tb testing.TB, e *brokertest.Env, c *brokertest.Connector, want time.Duration) {
	tb.Helper()
	brokertest.WaitFor(tb, 10*time.Second, "connector's wireguard keepalive "+want.String(), func() bool {
		return peerKeepalive(tb, e, c) == want && c.Keepalive() == want
	})
}

func setKeepalive(tb testing.TB, e *brokertest.Env, name string, d time.Duration) {
	tb.Helper()
	if _, err := e.DB.SetDeviceKeepaliveAudited(context.Background(), "operator:test@host", name, d); err != nil {
		tb.Fatal(err)
	}
}

// TestKeepaliveSetting: the operators' keepalive reaches the connector's
// WireGuard peer at hello, and a change while it is connected reaches it
// over the live session, which carries on with its streams.
func TestKeepaliveSetting(t *testing.T) {
	e := brokertest.New(t)
	ctx := context.Background()
	echo := map[string]string{"echo": brokertest.EchoServer(t)}

	t.Run("at connect", func(t *testing.T) {
		s := e.Enroll("pump-1")
		setKeepalive(t, e, "pump-1", 2*time.Minute)
		c := e.StartConnector(s, echo, nil) // its own flag: 25 s
		brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-1") && c.Connected() })
		if got := peerKeepalive(t, e, c); got != 2*time.Minute {
			t.Fatalf("keepalive right after connecting: got %s, want 2m0s (the device's setting over the flag's 25s)", got)
		}
	})

	t.Run("live", func(t *testing.T) {
		s := e.Enroll("pump-2")
		c := e.StartConnector(s, echo, func(cfg *connector.Config) { cfg.Keepalive = 30 * time.Second })
		brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-2") && c.Connected() })
		waitKeepalive(t, e, c, 30*time.Second)
		st, err := e.Broker.OpenStream(ctx, "pump-2", "echo", newSessionID(t))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()

		for _, step := range []struct{ set, want time.Duration }{
			{2 * time.Minute, 2 * time.Minute},
			{45 * time.Second, 45 * time.Second},
			{0, 30 * time.Second}, // cleared: the connector's own again
		} {
			setKeepalive(t, e, "pump-2", step.set)
			waitKeepalive(t, e, c, step.want)
		}
		// The stream opened before the changes still carries bytes: the
		// session was never ended.
		roundTrip(t, st, 64<<10)
	})
}

// TestSilenceJudgedByDeviceKeepalive: liveness is judged by each device's
// keepalive in effect. With the broker's clock 100 s ahead of the last byte
// heard, a device at the default 25 s is cut as silent (3 x 25 s), while
// devices set to 2 min, at hello or live, stay connected.
func TestSilenceJudgedByDeviceKeepalive(t *testing.T) {
	var skew atomic.Int64
	e := brokertest.New(t, brokertest.WithBrokerConfig(func(cfg *broker.Config) {
		cfg.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	}))
	svc := map[string]string{"echo": brokertest.EchoServer(t)}
	atHello, live, plain := e.Enroll("at-hello"), e.Enroll("live"), e.Enroll("plain")
	setKeepalive(t, e, "at-hello", 2*time.Minute)
	cs := map[string]*brokertest.Connector{}
	for name, s := range map[string]*connector.State{"at-hello": atHello, "live": live, "plain": plain} {
		cs[name] = e.StartConnector(s, svc, nil)
	}
	brokertest.WaitFor(t, 20*time.Second, "connectors online", func() bool {
		for name, c := range cs {
			if !e.Broker.Connected(name) || !c.Connected() {
				return false
			}
		}
		return true
	})
	setKeepalive(t, e, "live", 2*time.Minute)
	waitKeepalive(t, e, cs["live"], 2*time.Minute)
	waitKeepalive(t, e, cs["at-hello"], 2*time.Minute)
	waitKeepalive(t, e, cs["plain"], 25*time.Second)

	// A device cut as silent reconnects within milliseconds: its history
	// keeps the cut.
	cutSilent := func(name string) bool {
		evs, err := e.DB.DeviceHistory(context.Background(), name, time.Now().Add(-time.Hour), 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Kind == fieldpass.DeviceOffline && ev.Details["reason"] == "silent" {
				return true
			}
		}
		return false
	}
	// 100 s of apparent silence: past 3 x 25 s, short of 3 x 2 min. A
	// keepalive that lands between the jump and the broker's next
	// presence pass is heard at the new time and hides the jump; then jump
	// once more (200 s in all, still short of the 2-minute devices' 6).
	skew.Store(int64(100 * time.Second))
	for jumped := false; ; jumped = true {
		d, ok := waitUntil(5*time.Second, func() bool { return cutSilent("plain") })
		if ok {
			break
		}
		if jumped {
			t.Fatalf("plain device not cut as silent %s after 200 s of apparent silence", d)
		}
		skew.Store(int64(200 * time.Second))
	}
	time.Sleep(time.Second) // five more presence passes
	for _, name := range []string{"at-hello", "live"} {
		if cutSilent(name) || !e.Broker.Connected(name) {
			t.Errorf("%s (keepalive 2m) was cut after 100 s of silence", name)
		}
	}
}

// waitUntil polls cond every 50 ms for up to timeout; it reports how long
// it waited and whether cond came true.
func waitUntil(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start), true
}
