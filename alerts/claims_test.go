package alerts_test

import (
	"context"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// TestClaimsOneAlertPerFleet: three brokers' notifiers on one database
// raise the same event: one alert reaches the webhook, the others count
// as duplicates; an alert without a subject, and one about another
// subject, are sent as before.
func TestClaimsOneAlertPerFleet(t *testing.T) {
	db, err := postgres.Open(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	r, srv := newReceiver(t)
	var ns []*alerts.Notifier
	for range 3 {
		n := mustNew(t, alerts.Config{URL: srv.URL, Secret: secret, Claims: db})
		mustRun(t, n)
		ns = append(ns, n)
	}
	const dev = "6a0f3c52-3f55-4d2e-8e1f-2b8f3f0f1a01"
	for i, n := range ns {
		n.Notify(alerts.Alert{Kind: alerts.DeviceOffline, Device: "pump-7", Subject: dev, Details: map[string]any{"broker": i}})
	}
	first := r.next(t)
	if first.alert.Kind != alerts.DeviceOffline || first.alert.Device != "pump-7" {
		t.Fatalf("got %+v", first.alert)
	}
	waitDuplicates := func(want uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var dup uint64
			for _, n := range ns {
				dup += n.Duplicates()
			}
			if dup == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d duplicates counted, want %d", dup, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitDuplicates(2)

	// Not de-duplicated: no subject, or another subject.
	ns[1].Notify(alerts.Alert{Kind: alerts.DeviceOffline, Device: "pump-7"})
	ns[2].Notify(alerts.Alert{Kind: alerts.DeviceOffline, Device: "pump-8", Subject: "6a0f3c52-3f55-4d2e-8e1f-2b8f3f0f1a02"})
	r.next(t)
	r.next(t)
	waitDuplicates(2)
	select {
	case d := <-r.ch:
		t.Fatalf("an extra delivery: %+v", d.alert)
	case <-time.After(200 * time.Millisecond):
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != 3 {
		t.Errorf("%d deliveries, want 3", len(r.got))
	}
}
