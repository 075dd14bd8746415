package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

// listen runs ListenDevices until the test ends and returns the ids it
// reports, after the first "" (the LISTEN is in place).
func listen(tb testing.TB, s *store) <-chan string {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ids := make(chan string, 100)
	done := make(chan error, 1)
	go func() {
		done <- s.ListenDevices(ctx, func(id string) { ids <- id })
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("ListenDevices: got %v, want nil after cancel", err)
			}
		case <-time.After(5 * time.Second):
			tb.Errorf("ListenDevices did not return within 5s of cancel")
		}
	})
	wantID(tb, ids, "", 5*time.Second)
	return ids
}

func wantID(tb testing.TB, ids <-chan string, want string, within time.Duration) {
	tb.Helper()
	select {
	case got := <-ids:
		if got != want {
			tb.Fatalf("notification: got %q, want %q", got, want)
		}
	case <-time.After(within):
		tb.Fatalf("notification: got none within %s, want %q", within, want)
	}
}

// TestListenDevices checks which changes notify. Notifications arrive in
// commit order, so a change that should be quiet is followed by one that
// should not: if the first notified, its id would come first.
func TestListenDevices(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	a := s.mustEnroll(t, "a", 1)
	b := s.mustEnroll(t, "b", 2)
	ids := listen(t, s)

	p := fieldpass.Presence{Online: true, LastSeen: time.Now(), Endpoint: "203.0.113.7:51820", ConnectorVersion: "v1", BrokerID: "broker-1"}
	if err := s.UpdatePresence(ctx, a.ID, p); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkBrokerOffline(ctx, "broker-1"); err != nil {
		t.Fatal(err)
	}
	s.mustSetState(t, "b", fieldpass.DeviceDisabled)
	wantID(t, ids, b.ID, time.Second)

	s.mustSetState(t, "b", fieldpass.DeviceDisabled) // no change
	c := s.mustEnroll(t, "c", 3)
	wantID(t, ids, c.ID, time.Second)

	s.mustSetState(t, "b", fieldpass.DeviceActive)
	wantID(t, ids, b.ID, time.Second)
	s.mustSetState(t, "a", fieldpass.DeviceDecommissioned)
	wantID(t, ids, a.ID, time.Second)

	select {
	case id := <-ids:
		t.Errorf("unexpected notification %q", id)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestListenDevicesReconnect kills the listener's connection and expects a
// reload signal, then notifications again.
func TestListenDevicesReconnect(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	s.mustEnroll(t, "a", 1)
	ids := listen(t, s)

	var pid int
	err := s.sql.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()`,
		postgres.ListenApplicationName).Scan(&pid)
	if err != nil {
		t.Fatalf("find the listener's connection: %v", err)
	}
	var killed bool
	if err := s.sql.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend(%d): got %v, %v, want true", pid, killed, err)
	}
	wantID(t, ids, "", 5*time.Second)

	d := s.mustSetState(t, "a", fieldpass.DeviceDisabled)
	wantID(t, ids, d.ID, time.Second)
}
