package postgres_test

import (
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

func TestDeviceHistory(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	dev := s.mustEnroll(t, "pump-1", 1)
	other := s.mustEnroll(t, "pump-2", 2)
	start := s.clock.Now()

	record := func(e fieldpass.DeviceEvent) {
		t.Helper()
		if err := s.RecordDeviceEvent(ctx, e); err != nil {
			t.Fatalf("RecordDeviceEvent(%s): %v", e.Kind, err)
		}
	}
	record(fieldpass.DeviceEvent{DeviceID: dev.ID, Kind: fieldpass.DeviceOnline, BrokerID: "b1", Endpoint: "192.0.2.1:4000", ConnectorVersion: "v1"})
	s.clock.Add(time.Minute)
	record(fieldpass.DeviceEvent{DeviceID: dev.ID, Kind: fieldpass.DeviceEndpointChanged, BrokerID: "b1", Endpoint: "192.0.2.9:4001", PreviousEndpoint: "192.0.2.1:4000"})
	s.clock.Add(time.Minute)
	record(fieldpass.DeviceEvent{DeviceID: dev.ID, Kind: fieldpass.DeviceCloneSuspected, Details: map[string]any{"flaps": 4.0}})
	record(fieldpass.DeviceEvent{DeviceID: other.ID, Kind: fieldpass.DeviceOnline})

	got, err := s.DeviceHistory(ctx, "pump-1", time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range got {
		kinds = append(kinds, string(e.Kind))
	}
	if want := []string{"clone_suspected", "endpoint_changed", "online"}; !equal(kinds, want) {
		t.Fatalf("kinds: got %v, want %v (newest first)", kinds, want)
	}
	if e := got[1]; e.PreviousEndpoint != "192.0.2.1:4000" || e.Endpoint != "192.0.2.9:4001" || !e.At.Equal(start.Add(time.Minute)) || e.DeviceID != dev.ID {
		t.Errorf("endpoint_changed: got %+v", e)
	}
	if e := got[2]; e.ConnectorVersion != "v1" || e.BrokerID != "b1" || e.Details != nil {
		t.Errorf("online: got %+v", e)
	}
	if e := got[0]; e.Details["flaps"] != 4.0 {
		t.Errorf("details: got %v", e.Details)
	}

	t.Run("since and limit", func(t *testing.T) {
		got, err := s.DeviceHistory(ctx, "pump-1", start.Add(30*time.Second), 0)
		if err != nil || len(got) != 2 {
			t.Errorf("since: got %d rows, %v; want 2", len(got), err)
		}
		got, err = s.DeviceHistory(ctx, "pump-1", time.Time{}, 1)
		if err != nil || len(got) != 1 || got[0].Kind != fieldpass.DeviceCloneSuspected {
			t.Errorf("limit 1: got %v, %v", got, err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		_, err := s.DeviceHistory(ctx, "no-such", time.Time{}, 0)
		wantError(t, err, fieldpass.ENOTFOUND, "not found")
		wantError(t, s.RecordDeviceEvent(ctx, fieldpass.DeviceEvent{DeviceID: dev.ID, Kind: "rebooted"}), fieldpass.EINVALID, "kind")
		wantError(t, s.RecordDeviceEvent(ctx, fieldpass.DeviceEvent{DeviceID: "x", Kind: fieldpass.DeviceOnline}), fieldpass.EINVALID, "device id")
	})
}

func TestDeviceHistoryAsBrokerRole(t *testing.T) {
	t.Parallel()
	r := mustRoles(t)
	ctx := t.Context()
	tok, _, err := r.broker.CreateEnrollmentToken(ctx, "pump-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := r.broker.Enroll(ctx, tok, key(1), "v1", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.broker.RecordDeviceEvent(ctx, fieldpass.DeviceEvent{DeviceID: dev.ID, Kind: fieldpass.DeviceOnline}); err != nil {
		t.Fatalf("RecordDeviceEvent as the broker role: %v", err)
	}
	if got, err := r.broker.DeviceHistory(ctx, "pump-1", time.Time{}, 0); err != nil || len(got) != 1 {
		t.Fatalf("DeviceHistory as the broker role: got %d rows, %v", len(got), err)
	}
	for _, q := range []string{"UPDATE device_events SET kind = 'offline'", "DELETE FROM device_events"} {
		if _, err := r.brokerConn.Exec(ctx, q); err == nil {
			t.Errorf("%s as the broker role: succeeded, want permission denied", q)
		}
	}
}

func TestStaleReport(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	const day = 24 * time.Hour

	// pump-1 has a session, used by grant g; pump-2 never connected, nor
	// had a session; pump-3 was seen today.
	g := sessionSetup(t, s)
	unused := s.mustGrant(t, fieldpass.Grant{Subject: "eng@example.com", Devices: []string{"pump-1"}, Services: []string{"web"}})
	s.mustOpenSession(t, g, "b1")
	s.mustEnroll(t, "pump-2", 2)
	dev3 := s.mustEnroll(t, "pump-3", 3)
	s.mustUser(t, "vendor@example.com")
	s.mustUser(t, "busy-vendor@example.com")
	s.mustUser(t, "admin@example.com", fieldpass.RoleAdmin)

	s.clock.Add(100 * day)
	live := s.mustGrant(t, fieldpass.Grant{Subject: "busy-vendor@example.com", Devices: []string{"pump-3"}, Services: []string{"ssh"}})
	if err := s.UpdatePresence(ctx, dev3.ID, fieldpass.Presence{LastSeen: s.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	s.mustSetState(t, "pump-2", fieldpass.DeviceDisabled)

	rep, err := s.StaleReport(ctx, fieldpass.StaleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	targets := func(items []fieldpass.StaleItem) (names, cmds []string) {
		for _, it := range items {
			names = append(names, it.Target)
			cmds = append(cmds, it.Command)
		}
		return names, cmds
	}
	check := func(what string, items []fieldpass.StaleItem, wantNames, wantCmds []string) {
		t.Helper()
		names, cmds := targets(items)
		if !equal(names, wantNames) || !equal(cmds, wantCmds) {
			t.Errorf("%s: got %v %q, want %v %q", what, names, cmds, wantNames, wantCmds)
		}
	}
	check("not seen", rep.NotSeen, []string{"pump-1", "pump-2"},
		[]string{"fieldpass-broker device disable pump-1", "fieldpass-broker device decommission pump-2"})
	check("no session", rep.NoSession, []string{"pump-1", "pump-2", "pump-3"},
		[]string{"fieldpass-broker device decommission pump-1", "fieldpass-broker device decommission pump-2", "fieldpass-broker device decommission pump-3"})
	// unused ended long ago: nothing to do; live is unused and revocable.
	check("unused grants", rep.UnusedGrants, []string{unused.ID, live.ID},
		[]string{"", "fieldpass grant revoke " + live.ID})
	check("idle vendors", rep.IdleVendors, []string{"vendor@example.com"},
		[]string{"fieldpass-broker user disable vendor@example.com"})

	t.Run("thresholds", func(t *testing.T) {
		rep, err := s.StaleReport(ctx, fieldpass.StaleOptions{NotSeen: 200 * day, NoSession: 200 * day})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.NotSeen) != 0 || len(rep.NoSession) != 0 {
			t.Errorf("200-day thresholds: got %+v %+v, want none", rep.NotSeen, rep.NoSession)
		}
		_, err = s.StaleReport(ctx, fieldpass.StaleOptions{NotSeen: -day})
		wantError(t, err, fieldpass.EINVALID, "negative")
	})
}
