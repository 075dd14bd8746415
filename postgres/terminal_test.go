package postgres_test

import (
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestHostKeys: a host key is pinned once (a second pin finds the first),
// an admin's accept clears it so the next session pins anew, and both are
// audited.
func TestHostKeys(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	dev := s.mustEnroll(t, "pump-1", 1)
	k1 := fieldpass.SSHHostKey{DeviceID: dev.ID, Service: "ssh", Type: "ssh-ed25519", Key: []byte{1}, Fingerprint: "SHA256:one", PinnedBy: "user:a@example.com"}
	if _, err := s.HostKey(ctx, dev.ID, "ssh"); fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND {
		t.Fatalf("HostKey before any pin: %v, want not_found", err)
	}
	got, err := s.PinHostKey(ctx, k1, "pump-1")
	if err != nil || got.Fingerprint != "SHA256:one" {
		t.Fatalf("PinHostKey: %+v, %v", got, err)
	}
	k2 := k1
	k2.Key, k2.Fingerprint = []byte{2}, "SHA256:two"
	if got, err := s.PinHostKey(ctx, k2, "pump-1"); err != nil || got.Fingerprint != "SHA256:one" {
		t.Fatalf("a second pin: %+v, %v; want the first kept", got, err)
	}
	if got, err := s.RepinHostKey(ctx, k2, "pump-1"); err != nil || got.Fingerprint != "SHA256:one" {
		t.Fatalf("repin of a held pin: %+v, %v; want it left alone", got, err)
	}
	if err := s.ForgetHostKey(ctx, "user:admin@example.com", dev.ID, "pump-1", "ssh"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.RepinHostKey(ctx, k2, "pump-1"); err != nil || got.Fingerprint != "SHA256:two" {
		t.Fatalf("repin after accept: %+v, %v", got, err)
	}
	if keys, err := s.HostKeys(ctx, dev.ID); err != nil || len(keys) != 1 || keys[0].Fingerprint != "SHA256:two" {
		t.Errorf("HostKeys: %+v, %v", keys, err)
	}
	if n := s.count(t, `SELECT count(*) FROM audit_events WHERE action IN ('ssh_host_key.pin', 'ssh_host_key.accept')`); n != 3 {
		t.Errorf("host key audit events: %d, want 3 (pin, accept, pin)", n)
	}
}

// TestRecordingsAndRetention: a recording is read back whole in order;
// retention deletes recordings and web request logs past it, and says so
// in the audit log, and keeps the session.
func TestRecordingsAndRetention(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	g := sessionSetup(t, s)
	sess := s.mustOpenSession(t, g, "broker-1")
	if err := s.StartRecording(ctx, sess.ID, `{"version":2,"width":80,"height":24}`, false); err != nil {
		t.Fatal(err)
	}
	for i, chunk := range []string{"[0.1,\"o\",\"a\"]\n", "[0.2,\"o\",\"b\"]\n"} {
		if err := s.AppendRecording(ctx, sess.ID, i, chunk); err != nil {
			t.Fatal(err)
		}
	}
	cast, err := s.Recording(ctx, sess.ID)
	if err != nil || cast != "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"a\"]\n[0.2,\"o\",\"b\"]\n" {
		t.Fatalf("Recording: %q, %v", cast, err)
	}
	long := strings.Repeat("é", fieldpass.MaxWebPath)
	if err := s.RecordWebRequests(ctx, []fieldpass.WebRequest{
		{SessionID: sess.ID, At: s.clock.Now(), Method: "GET", Path: "/", Status: 200, BytesOut: 10, Duration: 5 * time.Millisecond},
		{SessionID: sess.ID, At: s.clock.Now(), Method: "GET", Path: long, Status: 404},
	}); err != nil {
		t.Fatal(err)
	}
	reqs, err := s.WebRequests(ctx, sess.ID, 0)
	if err != nil || len(reqs) != 2 || reqs[0].Duration != 5*time.Millisecond || len(reqs[1].Path) > fieldpass.MaxWebPath || !strings.HasSuffix(reqs[1].Path, "…") {
		t.Fatalf("WebRequests: %+v, %v", reqs, err)
	}
	recs, webs, err := s.ApplyRetention(ctx, "broker:b1", s.clock.Now().Add(-time.Hour))
	if err != nil || recs != 0 || webs != 0 {
		t.Fatalf("retention before anything is old: %d, %d, %v", recs, webs, err)
	}
	recs, webs, err = s.ApplyRetention(ctx, "broker:b1", s.clock.Now().Add(time.Hour))
	if err != nil || recs != 1 || webs != 2 {
		t.Fatalf("retention: %d recordings, %d web requests, %v; want 1, 2", recs, webs, err)
	}
	if _, err := s.Recording(ctx, sess.ID); fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND {
		t.Errorf("recording after retention: %v", err)
	}
	if _, err := s.Session(ctx, sess.ID); err != nil {
		t.Errorf("the session went with its recording: %v", err)
	}
	if n := s.count(t, `SELECT count(*) FROM audit_events WHERE action = 'retention.apply'`); n != 1 {
		t.Errorf("retention audit events: %d, want 1", n)
	}
}
