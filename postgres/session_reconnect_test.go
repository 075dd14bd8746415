package postgres_test

import (
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

// TestSessionDeviceReconnected: an open session's row counts its device's
// reconnects with an event each; the counts only grow, and an ended row is
// left as its end recorded it.
func TestSessionDeviceReconnected(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	g := sessionSetup(t, s)
	sess := s.mustOpenSession(t, g, "broker-1")

	if err := s.SessionDeviceReconnected(ctx, sess.ID, "broker-1", fieldpass.SessionReconnect{Reconnects: 1, StreamsCut: 2, Cut: 2, Away: 1500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Session(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Open() || got.DeviceReconnects != 1 || got.StreamsCut != 2 {
		t.Fatalf("row: open %v, %d reconnects, %d cut; want open, 1, 2", got.Open(), got.DeviceReconnects, got.StreamsCut)
	}
	evs, err := s.AuditEvents(ctx, fieldpass.AuditFilter{Action: fieldpass.AuditSessionDeviceReconnected})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Actor != "broker:broker-1" || evs[0].Target != postgres.SessionTarget(sess.ID) ||
		evs[0].Details["streams_cut"] != float64(2) || evs[0].Details["away"] != "1.5s" || evs[0].Details["device"] != "pump-1" {
		t.Fatalf("events: %+v", evs)
	}

	// Lower counts (a late write) change nothing.
	if err := s.SessionReconnectCounts(ctx, sess.ID, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SessionReconnectCounts(ctx, sess.ID, 2, 3); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Session(ctx, sess.ID); got.DeviceReconnects != 2 || got.StreamsCut != 3 {
		t.Fatalf("after counts: %d reconnects, %d cut; want 2, 3", got.DeviceReconnects, got.StreamsCut)
	}
	// The guard refuses counting down behind the store's back.
	_, err = s.sql.Exec(ctx, `UPDATE sessions SET streams_cut = 0 WHERE id = $1`, sess.ID)
	if err == nil || !strings.Contains(err.Error(), "sessions are records") {
		t.Fatalf("counting down: %v, want refused", err)
	}

	if _, err := s.EndSession(ctx, sess.ID, time.Time{}, 0, 0, fieldpass.EndClientClosed); err != nil {
		t.Fatal(err)
	}
	if err := s.SessionDeviceReconnected(ctx, sess.ID, "broker-1", fieldpass.SessionReconnect{Reconnects: 5, StreamsCut: 5}); err != nil {
		t.Fatal(err)
	}
	if err := s.SessionReconnectCounts(ctx, sess.ID, 6, 6); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Session(ctx, sess.ID); got.DeviceReconnects != 2 || got.StreamsCut != 3 {
		t.Fatalf("ended row changed: %d reconnects, %d cut; want 2, 3", got.DeviceReconnects, got.StreamsCut)
	}
	if evs, _ := s.AuditEvents(ctx, fieldpass.AuditFilter{Action: fieldpass.AuditSessionDeviceReconnected}); len(evs) != 1 {
		t.Fatalf("%d reconnect events after the end, want 1", len(evs))
	}
	wantError(t, s.SessionReconnectCounts(ctx, "nope", 1, 1), fieldpass.EINVALID, "invalid session id")
	wantError(t, s.SessionReconnectCounts(ctx, sess.ID, -1, 1), fieldpass.EINVALID, "negative")
}
