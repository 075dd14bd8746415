package broker_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector"
)

// kinds returns the device's history kinds in e, oldest first.
func kinds(tb testing.TB, e *brokertest.Env, name string) ([]string, []*fieldpass.DeviceEvent) {
	tb.Helper()
	evs, err := e.DB.DeviceHistory(context.Background(), name, time.Time{}, 0)
	if err != nil {
		tb.Fatalf("DeviceHistory(%s): %v", name, err)
	}
	var ks []string
	for i := len(evs) - 1; i >= 0; i-- {
		ks = append(ks, string(evs[i].Kind))
	}
	return ks, evs
}

// TestDeviceHistory: a connector upgraded while the broker was down comes
// online (version_changed, online), roams (endpoint_changed) and goes away
// (offline), and each shows in the device's history.
func TestDeviceHistory(t *testing.T) {
	e := brokertest.New(t)
	ctx := context.Background()
	s := e.Enroll("pump-3")
	dev, err := e.DB.Device(ctx, "pump-3")
	if err != nil {
		t.Fatal(err)
	}
	e.Stop()
	if err := e.DB.UpdatePresence(ctx, dev.ID, fieldpass.Presence{ConnectorVersion: "v0.0.1-old"}); err != nil {
		t.Fatal(err)
	}
	e.Start()
	fast := func(c *connector.Config) { c.Keepalive = 2 * time.Second }
	c := e.StartConnector(s, map[string]string{"echo": brokertest.EchoServer(t)}, fast)
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-3") })
	brokertest.WaitFor(t, 5*time.Second, "online in history", func() bool {
		ks, _ := kinds(t, e, "pump-3")
		return strings.Join(ks, ",") == "version_changed,online"
	})
	_, evs := kinds(t, e, "pump-3")
	if v := evs[1]; v.Details["previous_version"] != "v0.0.1-old" || v.ConnectorVersion != fieldpass.Version || v.BrokerID != "test-broker" {
		t.Errorf("version_changed: got %+v", v)
	}

	// Roaming: wait for the first endpoint to be known, then move.
	brokertest.WaitFor(t, 5*time.Second, "endpoint known", func() bool {
		d, err := e.DB.Device(ctx, "pump-3")
		return err == nil && d.Presence.Endpoint != ""
	})
	oldPort := c.Device().ListenPort()
	if err := c.Rebind(); err != nil {
		t.Fatal(err)
	}
	newPort := c.Device().ListenPort()
	brokertest.WaitFor(t, 10*time.Second, "endpoint_changed in history", func() bool {
		ks, _ := kinds(t, e, "pump-3")
		return len(ks) > 0 && ks[len(ks)-1] == "endpoint_changed"
	})
	_, evs = kinds(t, e, "pump-3")
	if r := evs[0]; !strings.HasSuffix(r.Endpoint, fmt.Sprintf(":%d", newPort)) || !strings.HasSuffix(r.PreviousEndpoint, fmt.Sprintf(":%d", oldPort)) {
		t.Errorf("endpoint_changed: got %s from %s, want ports %d from %d", r.Endpoint, r.PreviousEndpoint, newPort, oldPort)
	}

	// The connector goes away (its session closes, or falls silent).
	c.Stop()
	brokertest.WaitFor(t, 20*time.Second, "offline in history", func() bool {
		ks, _ := kinds(t, e, "pump-3")
		return strings.Join(ks, ",") == "version_changed,online,endpoint_changed,offline"
	})

}

// TestCloneDetector feeds endpoint changes to the flap detector: roaming
// to new addresses is not a clone; swinging between two endpoints is,
// reported once per window.
func TestCloneDetector(t *testing.T) {
	a, b, c := netip.MustParseAddrPort("192.0.2.1:4000"), netip.MustParseAddrPort("198.51.100.7:5000"), netip.MustParseAddrPort("203.0.113.9:6000")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		moves []netip.AddrPort
		gap   time.Duration
		want  []bool
	}{
		{"roaming", []netip.AddrPort{a, b, c, a, c}, time.Second, []bool{false, false, false, false, false}},
		{"flapping", []netip.AddrPort{a, b, a, b, a, b}, time.Second, []bool{false, false, false, true, false, false}},
		{"slow flapping", []netip.AddrPort{a, b, a, b, a}, 6 * time.Minute, []bool{false, false, false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := broker.NewCloneDetector()
			for i, m := range tc.moves {
				if got := d.Move(m, t0.Add(time.Duration(i)*tc.gap)); got != tc.want[i] {
					t.Errorf("move %d to %s: got suspect %v, want %v", i, m, got, tc.want[i])
				}
			}
		})
	}
}
