package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fieldpass/fieldpass"
)

// TestSetDeviceKeepalive sets, repeats and clears a device's keepalive: each
// change is stored, audited and announced to brokers; a repeat is none of
// these; values outside the range are refused by the store and, behind its
// back, by the table.
func TestSetDeviceKeepalive(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	dev := s.mustEnroll(t, "pump-7", 1)
	if dev.KeepaliveSeconds != 0 {
		t.Fatalf("new device keepalive: got %d, want 0 (the connector's own)", dev.KeepaliveSeconds)
	}
	ids := listen(t, s)
	audited := func() int {
		return s.count(t, `SELECT count(*) FROM audit_events WHERE action = $1`, fieldpass.AuditDeviceKeepalive)
	}
	const op = "operator:alice@host"

	for i, step := range []struct {
		set    time.Duration
		want   int
		change bool
	}{
		{2 * time.Minute, 120, true},
		{2 * time.Minute, 120, false},
		{10 * time.Second, 10, true},
		{0, 0, true},
		{0, 0, false},
	} {
		got, err := s.SetDeviceKeepaliveAudited(ctx, op, "pump-7", step.set)
		if err != nil {
			t.Fatalf("step %d: set %s: %v", i, step.set, err)
		}
		if got.KeepaliveSeconds != step.want {
			t.Errorf("step %d: returned keepalive %d, want %d", i, got.KeepaliveSeconds, step.want)
		}
		stored, err := s.DeviceByID(ctx, dev.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.KeepaliveSeconds != step.want {
			t.Errorf("step %d: stored keepalive %d, want %d", i, stored.KeepaliveSeconds, step.want)
		}
		if step.change {
			wantID(t, ids, dev.ID, 5*time.Second)
		}
	}
	if got, want := audited(), 3; got != want {
		t.Errorf("device.keepalive audit events: got %d, want %d (one per change)", got, want)
	}
	var details map[string]any
	if err := s.sql.QueryRow(ctx, `SELECT details FROM audit_events WHERE action = $1 ORDER BY seq LIMIT 1`,
		fieldpass.AuditDeviceKeepalive).Scan(&details); err != nil {
		t.Fatal(err)
	}
	if details["from_keepalive_seconds"] != float64(0) || details["to_keepalive_seconds"] != float64(120) || details["device_id"] != dev.ID {
		t.Errorf("first audit details: got %v, want device_id, from 0 to 120", details)
	}

	for _, tt := range []struct {
		name string
		set  time.Duration
	}{
		{"too short", 9 * time.Second},
		{"too long", time.Hour + time.Second},
		{"fraction", 30500 * time.Millisecond},
		{"negative", -time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.SetDeviceKeepalive(ctx, "pump-7", tt.set)
			wantError(t, err, fieldpass.EINVALID, "keepalive")
		})
	}
	t.Run("unknown device", func(t *testing.T) {
		_, err := s.SetDeviceKeepalive(ctx, "nope", time.Minute)
		wantError(t, err, fieldpass.ENOTFOUND, "not found")
	})
	t.Run("table refuses out of range", func(t *testing.T) {
		for _, v := range []int{0, 9, 3601} {
			_, err := s.sql.Exec(ctx, `UPDATE devices SET keepalive_seconds = $1 WHERE id = $2::uuid`, v, dev.ID)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.ConstraintName != "devices_keepalive_range" {
				t.Errorf("keepalive_seconds = %d: got %v, want devices_keepalive_range violation", v, err)
			}
		}
	})
	t.Run("no actor", func(t *testing.T) {
		_, err := s.SetDeviceKeepaliveAudited(ctx, "", "pump-7", time.Minute)
		wantError(t, err, fieldpass.EINVALID, "actor")
	})
}
