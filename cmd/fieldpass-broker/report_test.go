package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestDeviceHistoryAndStaleReport(t *testing.T) {
	ctx := t.Context()
	dbURL, db, dev := enrolledDevice(t, "pump-7")
	now := time.Now()
	for _, e := range []fieldpass.DeviceEvent{
		{DeviceID: dev.ID, At: now.Add(-48 * time.Hour), Kind: fieldpass.DeviceOnline, Endpoint: "192.0.2.1:4000", BrokerID: "b1", ConnectorVersion: "v1.2.3"},
		{DeviceID: dev.ID, At: now.Add(-time.Hour), Kind: fieldpass.DeviceEndpointChanged, Endpoint: "192.0.2.9:4001", PreviousEndpoint: "192.0.2.1:4000", BrokerID: "b1"},
	} {
		if err := db.RecordDeviceEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("history", func(t *testing.T) {
		out := mustRun(t, dbURL, "device", "history", "pump-7")
		if !strings.Contains(out, "TIME") || !strings.Contains(out, "192.0.2.1:4000 -> 192.0.2.9:4001") || strings.Contains(out, "online") {
			t.Errorf("history (24h):\n%s", out)
		}
		var evs []fieldpass.DeviceEvent
		if err := json.Unmarshal([]byte(mustRun(t, dbURL, "device", "history", "pump-7", "--since", "3d", "--json")), &evs); err != nil || len(evs) != 2 || evs[1].Kind != fieldpass.DeviceOnline {
			t.Errorf("history --since 3d --json: got %+v, %v", evs, err)
		}
		if _, _, err := runCmd(t, dbURL, "device", "history", "no-such"); fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND {
			t.Errorf("unknown device: got %v, want not_found", err)
		}
		if _, _, err := runCmd(t, dbURL, "device", "history", "pump-7", "--since", "yesterday"); err == nil {
			t.Error("--since yesterday: no error")
		}
	})

	t.Run("stale", func(t *testing.T) {
		// Enrolled just now: not stale at the defaults, stale at 0-ish thresholds.
		out := mustRun(t, dbURL, "report", "stale")
		if !strings.Contains(out, "Devices not seen for 30d: 0") || !strings.Contains(out, "Devices with no session for 90d: 0") {
			t.Errorf("report stale:\n%s", out)
		}
		out = mustRun(t, dbURL, "report", "stale", "--not-seen", "1ns", "--no-session", "1ns")
		if !strings.Contains(out, "fieldpass-broker device disable pump-7") || !strings.Contains(out, "fieldpass-broker device decommission pump-7") {
			t.Errorf("report stale at 1ns:\n%s", out)
		}
		var rep fieldpass.StaleReport
		if err := json.Unmarshal([]byte(mustRun(t, dbURL, "report", "stale", "--no-session", "1ns", "--json")), &rep); err != nil || len(rep.NoSession) != 1 || rep.NoSession[0].Target != "pump-7" {
			t.Errorf("report stale --json: got %+v, %v", rep, err)
		}
	})
}

// enrolledDevice gives a test a database of its own holding one enrolled
// device, name, at connector version v1.2.3; the store is closed when the
// test ends.
func enrolledDevice(t *testing.T, name string) (dbURL string, db *postgres.DB, dev *fieldpass.Device) {
	t.Helper()
	ctx := t.Context()
	dbURL = pgtest.NewDatabase(t)
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	tok, _, err := db.CreateEnrollmentToken(ctx, name, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr := func(seq int64) (netip.Addr, error) { return netip.AddrFrom4([4]byte{10, 77, 0, byte(seq + 1)}), nil }
	dev, err = db.Enroll(ctx, tok, "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "v1.2.3", addr)
	if err != nil {
		t.Fatal(err)
	}
	return dbURL, db, dev
}
