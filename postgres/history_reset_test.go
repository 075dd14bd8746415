package postgres_test

import (
	"testing"

	"github.com/fieldpass/fieldpass"
)

// TestDeviceHistoryHandshakeReset: the kind added by migration 00008 is
// stored and read back with its details; an unknown kind is still refused.
func TestDeviceHistoryHandshakeReset(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	dev := s.mustEnroll(t, "pump-9", 1)
	e := fieldpass.DeviceEvent{DeviceID: dev.ID, Kind: fieldpass.DeviceHandshakeReset, BrokerID: "b1", Endpoint: "203.0.113.2:40000",
		Details: map[string]any{"silent_for": "3m10s", "silent_for_seconds": 190.0, "reset_after": "3m0s"}}
	if err := s.RecordDeviceEvent(ctx, e); err != nil {
		t.Fatalf("RecordDeviceEvent(handshake_reset): %v", err)
	}
	evs, err := s.DeviceHistory(ctx, "pump-9", s.clock.Now().Add(-1), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Kind != fieldpass.DeviceHandshakeReset || evs[0].Details["silent_for_seconds"] != 190.0 || evs[0].Endpoint != e.Endpoint {
		t.Fatalf("history: got %+v, want the one handshake_reset", evs)
	}
	if err := s.RecordDeviceEvent(ctx, fieldpass.DeviceEvent{DeviceID: dev.ID, Kind: "handshake_resets"}); fieldpass.ErrorCode(err) != fieldpass.EINVALID {
		t.Errorf("unknown kind: got %v, want invalid", err)
	}
}
