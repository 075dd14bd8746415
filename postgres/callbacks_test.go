package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

// A dead broker's devices, assigned to live brokers: each assignee is told,
// takes its share once, a device's row goes when any broker takes its
// lease, and what a dead assignee had not brought back is found again.
func TestCallbacks(t *testing.T) {
	s := mustOpen(t)
	ctx := context.Background()
	p1, p2, p3 := s.mustEnroll(t, "pump-1", 1), s.mustEnroll(t, "pump-2", 2), s.mustEnroll(t, "pump-3", 3)
	for i, d := range []*fieldpass.Device{p1, p2, p3} {
		if err := s.UpdatePresence(ctx, d.ID, fieldpass.Presence{Online: true, BrokerID: "broker-x", Endpoint: "192.0.2.1:" + string(rune('1'+i)) + "000"}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for _, id := range []string{"broker-a", "broker-b", "broker-x"} {
		if err := s.BrokerAlive(ctx, id, "", start, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// broker-x held all three; broker-a holds one more device of its own.
	p4 := s.mustEnroll(t, "pump-4", 4)
	for _, d := range []*fieldpass.Device{p1, p2, p3} {
		if _, err := s.AcquireLease(ctx, d.ID, "broker-x", time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AcquireLease(ctx, p4.ID, "broker-a", time.Minute); err != nil {
		t.Fatal(err)
	}
	// broker-x is claimed (its roll row stopped): it is no longer live.
	if _, err := s.sql.Exec(ctx, `UPDATE brokers SET alive_until = now(), stopped_at = now() WHERE id = 'broker-x'`); err != nil {
		t.Fatal(err)
	}
	loads, err := s.BrokerLoads(ctx)
	if err != nil || len(loads) != 2 || loads[0] != (postgres.BrokerLoad{ID: "broker-a", Devices: 1}) || loads[1] != (postgres.BrokerLoad{ID: "broker-b", Devices: 0}) {
		t.Fatalf("BrokerLoads = %+v, %v; want broker-a 1, broker-b 0", loads, err)
	}
	cbs, err := s.DevicesToCallBack(ctx, "broker-x", time.Minute)
	if err != nil || len(cbs) != 3 {
		t.Fatalf("DevicesToCallBack = %+v, %v; want 3", cbs, err)
	}
	for _, c := range cbs {
		if c.Endpoint == "" {
			t.Fatalf("callback %+v has no endpoint", c)
		}
	}

	told := make(chan string, 8)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go s.ListenCallbacks(lctx, func(id string) { told <- id })
	if id := <-told; id != "" {
		t.Fatalf("first call %q, want the reload call", id)
	}
	cbs[0].BrokerID, cbs[1].BrokerID, cbs[2].BrokerID = "broker-b", "broker-b", "broker-a"
	if err := s.AssignCallbacks(ctx, "broker-x", cbs); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case id := <-told:
			got[id] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("notified %v, want broker-a and broker-b", got)
		}
	}
	mine, err := s.TakeCallbacks(ctx, "broker-b")
	if err != nil || len(mine) != 2 || mine[0].Taken.IsZero() {
		t.Fatalf("TakeCallbacks(broker-b) = %+v, %v; want 2, taken", mine, err)
	}
	if again, err := s.TakeCallbacks(ctx, "broker-b"); err != nil || len(again) != 0 {
		t.Fatalf("second TakeCallbacks = %+v, %v; want none", again, err)
	}
	// One of broker-b's devices comes back (to broker-a, as it happens):
	// its row goes with the lease taken.
	time.Sleep(1100 * time.Millisecond) // broker-x's leases run out
	if _, err := s.AcquireLease(ctx, mine[0].DeviceID, "broker-a", time.Minute); err != nil {
		t.Fatal(err)
	}
	left, err := s.CallbacksOf(ctx, "broker-b")
	if err != nil || len(left) != 1 || left[0].DeviceID != mine[1].DeviceID || left[0].Taken.IsZero() {
		t.Fatalf("CallbacksOf(broker-b) = %+v, %v; want only %s, taken", left, err, mine[1].DeviceID)
	}
	// broker-b dies before the other: its sweep finds it, and none of the
	// leases it never held.
	again, err := s.DevicesToCallBack(ctx, "broker-b", time.Minute)
	if err != nil || len(again) != 1 || again[0].DeviceID != mine[1].DeviceID || again[0].Endpoint == "" {
		t.Fatalf("DevicesToCallBack(broker-b) = %+v, %v; want %s", again, err, mine[1].DeviceID)
	}
	if n, err := s.PruneCallbacks(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("PruneCallbacks(1h) = %d, %v; want 0", n, err)
	}
	if n, err := s.PruneCallbacks(ctx, 0); err != nil || n != 2 {
		t.Fatalf("PruneCallbacks(0) = %d, %v; want 2", n, err)
	}
}
