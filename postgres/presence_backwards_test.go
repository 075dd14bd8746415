package postgres_test

import (
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// Last seen never moves backwards: the presence written at a disconnect
// carries the last packet's time, which a touch may already have passed.
func TestLastSeenNeverBackwards(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	a := s.mustEnroll(t, "a", 1)
	later := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.UpdatePresence(ctx, a.ID, fieldpass.Presence{Online: true, LastSeen: later.Add(-time.Minute), BrokerID: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchDevices(ctx, []string{a.ID}, later); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdatePresence(ctx, a.ID, fieldpass.Presence{Online: false, LastSeen: later.Add(-30 * time.Second), BrokerID: "b"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Device(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.Presence.Online || !got.Presence.LastSeen.Equal(later) {
		t.Fatalf("presence %+v: want offline, last seen %s (not earlier)", got.Presence, later)
	}
}
