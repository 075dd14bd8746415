package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/broker/brokertest"
)

// A connector stopped cleanly says goodbye: the broker marks the device
// offline within a second, not after keepalives of silence, and its last
// seen time does not move backwards.
func TestCleanStopGoesOfflineAtOnce(t *testing.T) {
	e := brokertest.New(t)
	c := e.StartConnector(e.Enroll("pump-1"), map[string]string{"echo": brokertest.EchoServer(t)}, nil)
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-1") })
	ctx := context.Background()
	time.Sleep(300 * time.Millisecond) // a presence tick writes last seen
	before, err := e.DB.Device(ctx, "pump-1")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Stop()
	took := brokertest.WaitFor(t, 10*time.Second, "device offline at the broker", func() bool { return !e.Broker.Connected("pump-1") })
	t.Logf("offline %s after the connector stopped (stop took %s)", took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if d := time.Since(start); d > time.Second {
		t.Errorf("device offline %s after a clean stop, want within 1s", d.Round(time.Millisecond))
	}
	var after = before
	brokertest.WaitFor(t, 5*time.Second, "presence offline in the store", func() bool {
		after, err = e.DB.Device(ctx, "pump-1")
		return err == nil && !after.Presence.Online
	})
	if after.Presence.LastSeen.Before(before.Presence.LastSeen) {
		t.Errorf("last seen moved backwards: %s, then %s", before.Presence.LastSeen, after.Presence.LastSeen)
	}
}
