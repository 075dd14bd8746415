package postgres_test

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestEnrollByTokenKey: a token is stored with the public half of its
// WireGuard key, listed as an enrolment peer while it can enrol, and
// enrols by that key once, in the transaction and with the audit event of
// an enrolment by token.
func TestEnrollByTokenKey(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	token := s.mustToken(t, "gw-1", map[string]string{"site": "north"})
	other := s.mustToken(t, "gw-2", nil)
	_, pub := fieldpass.EnrollmentKey(token)
	tokenKey := base64.StdEncoding.EncodeToString(pub[:])

	peers, err := s.EnrollmentPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 || peers[0].Key != tokenKey || peers[0].DeviceName != "gw-1" || peers[0].Seq != 1 || peers[1].Seq != 2 {
		t.Fatalf("EnrollmentPeers: got %+v, want gw-1's key with number 1, then gw-2's", peers)
	}
	if n := s.count(t, `SELECT count(*) FROM enrollment_tokens WHERE enroll_key LIKE '%' || $1 || '%'`, token[4:20]); n != 0 {
		t.Error("the store holds the token's text in its key")
	}
	p, err := s.EnrollmentPeerOf(ctx, token)
	if err != nil || p == nil || p.Key != tokenKey {
		t.Fatalf("EnrollmentPeerOf: %+v, %v", p, err)
	}

	dev, err := s.EnrollByTokenKeyAudited(ctx, "192.0.2.7:40000", tokenKey, key(1), "v0.5.0", addr)
	if err != nil {
		t.Fatal(err)
	}
	if dev.Name != "gw-1" || dev.Labels["site"] != "north" || dev.PublicKey != key(1) {
		t.Errorf("device: %+v", dev)
	}
	if n := s.count(t, `SELECT count(*) FROM enrollment_tokens WHERE enroll_key = $1 AND used_at IS NOT NULL AND device_id = $2::uuid`, tokenKey, dev.ID); n != 1 {
		t.Error("token not marked used by the device")
	}
	if n := s.count(t, `SELECT count(*) FROM audit_events WHERE action = $1 AND target = 'device:gw-1' AND details->>'client' = '192.0.2.7:40000'`, fieldpass.AuditDeviceEnroll); n != 1 {
		t.Errorf("device.enroll events: got %d, want 1", n)
	}
	_, err = s.EnrollByTokenKeyAudited(ctx, "192.0.2.7:40000", tokenKey, key(2), "v0.5.0", addr)
	wantError(t, err, fieldpass.ECONFLICT, "enrolment token already used")
	// The token itself is spent too: one device per token, by either path.
	_, err = s.Enroll(ctx, token, key(2), "v0.5.0", addr)
	wantError(t, err, fieldpass.ECONFLICT, "enrolment token already used")
	_, err = s.EnrollByTokenKey(ctx, key(9), key(2), "v0.5.0", addr)
	wantError(t, err, fieldpass.ENOTFOUND, "unknown enrolment token")

	peers, err = s.EnrollmentPeers(ctx)
	if err != nil || len(peers) != 1 || peers[0].DeviceName != "gw-2" {
		t.Fatalf("EnrollmentPeers after the use: %+v, %v; want gw-2's alone", peers, err)
	}
	if p, err := s.EnrollmentPeerOf(ctx, token); p != nil || err != nil {
		t.Errorf("EnrollmentPeerOf a used token: %+v, %v", p, err)
	}

	s.clock.Add(2 * time.Hour) // past other's expiry (an hour)
	_, otherPub := fieldpass.EnrollmentKey(other)
	_, err = s.EnrollByTokenKey(ctx, base64.StdEncoding.EncodeToString(otherPub[:]), key(3), "v0.5.0", addr)
	wantError(t, err, fieldpass.EEXPIRED, "enrolment token expired")
	if peers, err := s.EnrollmentPeers(ctx); err != nil || len(peers) != 0 {
		t.Errorf("EnrollmentPeers after expiry: %+v, %v; want none", peers, err)
	}
}
