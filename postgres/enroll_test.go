package postgres_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

func TestParseEnrollmentToken(t *testing.T) {
	valid := "fpe_" + strings.Repeat("A", 43)
	tests := []struct {
		name, token string
		ok          bool
	}{
		{"valid", valid, true},
		{"empty", "", false},
		{"prefix only", "fpe_", false},
		{"wrong prefix", "fpx_" + strings.Repeat("A", 43), false},
		{"truncated", valid[:len(valid)-1], false},
		{"too long", valid + "A", false},
		{"padded", "fpe_" + strings.Repeat("A", 42) + "=", false},
		{"standard base64", "fpe_" + strings.Repeat("A", 42) + "+", false},
		{"space", " " + valid, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := postgres.ParseEnrollmentToken(tt.token)
			if tt.ok {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			wantError(t, err, fieldpass.EINVALID, "malformed enrolment token")
		})
	}
}

func TestCreateEnrollmentToken(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	secret := bytes.Repeat([]byte{0xfb}, 32)
	s.Rand = bytes.NewReader(secret)

	token, expires, err := s.CreateEnrollmentToken(ctx, "gw-1", map[string]string{"site": "north"}, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if want := fieldpass.FormatEnrollmentToken([32]byte(secret)); token != want {
		t.Errorf("token: got %q, want %q (from the injected random bytes)", token, want)
	}
	if err := postgres.ParseEnrollmentToken(token); err != nil {
		t.Errorf("ParseEnrollmentToken(new token): %v", err)
	}
	if want := s.clock.Now().Add(2 * time.Hour); !expires.Equal(want) {
		t.Errorf("expires: got %v, want %v", expires, want)
	}

	var (
		hash           []byte
		name           string
		labels         map[string]string
		storedExpires  time.Time
		usedAt, device *string
	)
	err = s.sql.QueryRow(ctx, `SELECT token_hash, device_name, labels, expires_at, used_at::text, device_id::text FROM enrollment_tokens`).
		Scan(&hash, &name, &labels, &storedExpires, &usedAt, &device)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte(token)); !bytes.Equal(hash, sum[:]) {
		t.Errorf("token_hash: got %x, want sha256(token) %x", hash, sum)
	}
	if name != "gw-1" || !maps.Equal(labels, map[string]string{"site": "north"}) || !storedExpires.Equal(expires) || usedAt != nil || device != nil {
		t.Errorf("stored token: got name %q labels %v expires %v used %v device %v", name, labels, storedExpires, usedAt, device)
	}
	secretPart := strings.TrimPrefix(token, fieldpass.EnrollmentTokenPrefix)
	if n := s.count(t, `SELECT count(*) FROM enrollment_tokens t WHERE strpos(t::text, $1) > 0`, secretPart); n != 0 {
		t.Errorf("token text found in %d stored rows, want it stored only as a hash", n)
	}

	t.Run("invalid", func(t *testing.T) {
		tests := []struct {
			name, device string
			labels       map[string]string
			ttl          time.Duration
			msg          string
		}{
			{"bad name", "Bad_Name", nil, time.Hour, "invalid device name"},
			{"bad label", "gw-2", map[string]string{"Site": "x"}, time.Hour, "invalid label key"},
			{"zero ttl", "gw-2", nil, 0, "invalid token lifetime"},
			{"negative ttl", "gw-2", nil, -time.Hour, "invalid token lifetime"},
			{"sub-second ttl", "gw-2", nil, time.Nanosecond, "invalid token lifetime"},
			{"ttl over 30 days", "gw-2", nil, postgres.MaxEnrollmentTokenTTL + time.Second, "invalid token lifetime"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, _, err := s.CreateEnrollmentToken(ctx, tt.device, tt.labels, tt.ttl)
				wantError(t, err, fieldpass.EINVALID, tt.msg)
			})
		}
		if n := s.count(t, `SELECT count(*) FROM enrollment_tokens`); n != 1 {
			t.Errorf("tokens after refused creates: got %d, want 1", n)
		}
	})

	t.Run("random source fails", func(t *testing.T) {
		s.Rand = bytes.NewReader(nil)
		_, _, err := s.CreateEnrollmentToken(ctx, "gw-3", nil, time.Hour)
		if err == nil || fieldpass.ErrorCode(err) != fieldpass.EINTERNAL {
			t.Errorf("got %v, want an internal error", err)
		}
	})

	t.Run("name of a live device", func(t *testing.T) {
		s.Rand = nil // crypto/rand
		s.mustEnroll(t, "gw-4", 4)
		_, _, err := s.CreateEnrollmentToken(ctx, "gw-4", nil, time.Hour)
		wantError(t, err, fieldpass.ECONFLICT, `device "gw-4" is already enrolled`)
	})
}

func TestEnroll(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	created := s.clock.Now()
	token, _, err := s.CreateEnrollmentToken(ctx, "gw-1", map[string]string{"site": "north", "model": "rut955"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.clock.Add(10 * time.Minute)

	var seqs []int64
	dev, err := s.Enroll(ctx, token, key(1), "v1.2.3", func(seq int64) (netip.Addr, error) {
		seqs = append(seqs, seq)
		return addr(seq)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &fieldpass.Device{
		ID:         dev.ID,
		Name:       "gw-1",
		Labels:     map[string]string{"site": "north", "model": "rut955"},
		State:      fieldpass.DeviceActive,
		PublicKey:  key(1),
		TunnelAddr: netip.MustParseAddr("100.64.0.1"),
		CreatedAt:  created,
		EnrolledAt: created.Add(10 * time.Minute),
		Presence:   fieldpass.Presence{ConnectorVersion: "v1.2.3"},
	}
	checkDevice(t, "Enroll", dev, want)
	if len(seqs) != 1 || seqs[0] != 1 {
		t.Errorf("allocator calls: got %v, want [1]", seqs)
	}
	if n := s.count(t, `SELECT count(*) FROM enrollment_tokens WHERE used_at = $1 AND device_id = $2::uuid`, want.EnrolledAt, dev.ID); n != 1 {
		t.Errorf("token marked used by the device: got %d rows, want 1", n)
	}

	got, err := s.Device(ctx, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	checkDevice(t, "Device", got, want)
	got, err = s.DeviceByID(ctx, dev.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkDevice(t, "DeviceByID", got, want)
	peers, err := s.PeerDevices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].ID != dev.ID {
		t.Errorf("PeerDevices: got %v, want just the new device", peers)
	}

	second := s.mustEnroll(t, "gw-2", 2)
	if want := netip.MustParseAddr("100.64.0.2"); second.TunnelAddr != want {
		t.Errorf("second device's tunnel address: got %s, want %s", second.TunnelAddr, want)
	}
}

func checkDevice(tb testing.TB, what string, got, want *fieldpass.Device) {
	tb.Helper()
	if got.ID != want.ID || got.Name != want.Name || !maps.Equal(got.Labels, want.Labels) ||
		got.State != want.State || got.PublicKey != want.PublicKey || got.TunnelAddr != want.TunnelAddr ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.EnrolledAt.Equal(want.EnrolledAt) ||
		got.Presence.Online != want.Presence.Online || !got.Presence.LastSeen.Equal(want.Presence.LastSeen) ||
		got.Presence.Endpoint != want.Presence.Endpoint || got.Presence.ConnectorVersion != want.Presence.ConnectorVersion ||
		got.Presence.BrokerID != want.Presence.BrokerID {
		tb.Errorf("%s:\n got %+v\nwant %+v", what, *got, *want)
	}
}

// TestEnrollRefused checks that each bad enrolment gets its own clear error
// and writes nothing: no device, and no token used up.
func TestEnrollRefused(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	used := s.mustToken(t, "used", nil)
	if _, err := s.Enroll(ctx, used, key(1), "v1", addr); err != nil {
		t.Fatal(err)
	}
	expired, _, err := s.CreateEnrollmentToken(ctx, "expired", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fresh := s.mustToken(t, "fresh", nil)
	s.clock.Add(time.Minute) // expired expires exactly now: expiry is exclusive

	failAlloc := func(int64) (netip.Addr, error) { return netip.Addr{}, errors.New("prefix exhausted") }
	tests := []struct {
		name, token, key, version string
		alloc                     func(int64) (netip.Addr, error)
		code, msg                 string
	}{
		{"malformed", "fpe_short", key(2), "v1", addr, fieldpass.EINVALID, "malformed enrolment token"},
		{"unknown", fieldpass.FormatEnrollmentToken([32]byte{1, 2, 3}), key(2), "v1", addr, fieldpass.ENOTFOUND, "unknown enrolment token"},
		{"used", used, key(2), "v1", addr, fieldpass.ECONFLICT, "enrolment token already used"},
		{"expired", expired, key(2), "v1", addr, fieldpass.EEXPIRED, "enrolment token expired at 2030-01-02T03:05:05Z"},
		{"bad key", fresh, "not-a-key", "v1", addr, fieldpass.EINVALID, "invalid WireGuard public key"},
		{"zero key", fresh, strings.Repeat("A", 43) + "=", "v1", addr, fieldpass.EINVALID, "invalid WireGuard public key"},
		{"bad version", fresh, key(2), "v1 beta", addr, fieldpass.EINVALID, "invalid connector version"},
		{"allocator fails", fresh, key(2), "v1", failAlloc, fieldpass.EINTERNAL, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, err := s.Enroll(ctx, tt.token, tt.key, tt.version, tt.alloc)
			if dev != nil {
				t.Errorf("device: got %+v, want nil", dev)
			}
			wantError(t, err, tt.code, tt.msg)
			if n := s.count(t, `SELECT count(*) FROM devices`); n != 1 {
				t.Errorf("devices: got %d, want 1 (the one enrolled before)", n)
			}
			if n := s.count(t, `SELECT count(*) FROM enrollment_tokens WHERE used_at IS NOT NULL OR device_id IS NOT NULL`); n != 1 {
				t.Errorf("used tokens: got %d, want 1 (the one used before)", n)
			}
		})
	}

	// The token refused above for the allocator's sake still works.
	if _, err := s.Enroll(ctx, fresh, key(2), "v1", addr); err != nil {
		t.Errorf("Enroll with the token of a failed enrol: %v", err)
	}
}

// TestEnrollRace has fifty connectors enrol with one token at once: exactly
// one wins, the others are told the token is used.
func TestEnrollRace(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	token := s.mustToken(t, "contested", nil)

	const n = 50
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = s.Enroll(context.Background(), token, key(i), "v1", addr)
		})
	}
	close(start)
	wg.Wait()

	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case fieldpass.ErrorCode(err) != fieldpass.ECONFLICT || !strings.Contains(err.Error(), "already used"):
			t.Errorf("enrol %d: got %v, want success or conflict \"token already used\"", i, err)
		}
	}
	if wins != 1 {
		t.Errorf("successful enrolments: got %d, want 1", wins)
	}
	if got := s.count(t, `SELECT count(*) FROM devices`); got != 1 {
		t.Errorf("devices: got %d, want 1", got)
	}
}

// TestEnrollNameConflict enrols a name twice, then again after
// decommissioning the first device.
func TestEnrollNameConflict(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	first := s.mustToken(t, "gw", nil)
	second := s.mustToken(t, "gw", map[string]string{"generation": "2"})

	old, err := s.Enroll(ctx, first, key(1), "v1", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Enroll(ctx, second, key(2), "v1", addr)
	wantError(t, err, fieldpass.ECONFLICT, `device "gw" is already enrolled`)
	if n := s.count(t, `SELECT count(*) FROM enrollment_tokens WHERE used_at IS NULL`); n != 1 {
		t.Errorf("unused tokens after the conflict: got %d, want 1", n)
	}

	s.mustSetState(t, "gw", fieldpass.DeviceDecommissioned)
	dev, err := s.Enroll(ctx, second, key(2), "v1", addr)
	if err != nil {
		t.Fatalf("re-enrol after decommission: %v", err)
	}
	if dev.ID == old.ID || dev.TunnelAddr == old.TunnelAddr || dev.Labels["generation"] != "2" {
		t.Errorf("re-enrolled device: got %+v, want a new id and address, labels from the new token (old: %+v)", dev, old)
	}
	got, err := s.Device(ctx, "gw")
	if err != nil || got.ID != dev.ID {
		t.Errorf("Device(gw): got %v, %v, want the new device %s", got, err, dev.ID)
	}
	gone, err := s.DeviceByID(ctx, old.ID)
	if err != nil || gone.State != fieldpass.DeviceDecommissioned || gone.PublicKey != "" {
		t.Errorf("DeviceByID(old): got %+v, %v, want decommissioned without a key", gone, err)
	}
}

func TestEnrollKeyConflict(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	s.mustEnroll(t, "a", 1)
	token := s.mustToken(t, "b", nil)

	for _, state := range []fieldpass.DeviceState{fieldpass.DeviceActive, fieldpass.DeviceDisabled} {
		s.mustSetState(t, "a", state)
		_, err := s.Enroll(ctx, token, key(1), "v1", addr)
		wantError(t, err, fieldpass.ECONFLICT, "public key is already used")
	}
	if n := s.count(t, `SELECT count(*) FROM enrollment_tokens WHERE used_at IS NULL`); n != 1 {
		t.Errorf("unused tokens after the conflicts: got %d, want 1", n)
	}

	// Decommissioning drops the key for good, so it may be enrolled again.
	s.mustSetState(t, "a", fieldpass.DeviceDecommissioned)
	if _, err := s.Enroll(ctx, token, key(1), "v1", addr); err != nil {
		t.Errorf("enrol with the key of a decommissioned device: %v", err)
	}
}
