package postgres_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

// codes gives user codes from a list, then fails.
func codes(list ...string) func() (string, error) {
	return func() (string, error) {
		if len(list) == 0 {
			return "", fmt.Errorf("out of codes")
		}
		c := list[0]
		list = list[1:]
		return c, nil
	}
}

func newDeviceLogin(s *store, n int, key string) *postgres.DeviceLogin {
	now := s.clock.Now()
	return &postgres.DeviceLogin{CodeHash: sha256.Sum256(fmt.Appendf(nil, "fpd_%d", n)), Started: now, Expires: now.Add(10 * time.Minute),
		Interval: 5 * time.Second, Client: key + ":1", ClientKey: key, Agent: "fieldpass/test"}
}

// TestDeviceLoginStore: a login is stored by its code's hash, found by
// either code, changed and deleted under its row lock; a user code in use
// is drawn again.
func TestDeviceLoginStore(t *testing.T) {
	s := mustOpen(t)
	ctx := context.Background()
	lim := postgres.DeviceLoginLimits{Max: 100, PerClient: 5}
	d := newDeviceLogin(s, 1, "192.0.2.1")
	if err := s.StartDeviceLogin(ctx, d, lim, codes("BCDFGHJK")); err != nil {
		t.Fatal(err)
	}
	d2 := newDeviceLogin(s, 2, "192.0.2.1")
	if err := s.StartDeviceLogin(ctx, d2, lim, codes("BCDFGHJK", "LMNPQRST")); err != nil || d2.UserCode != "LMNPQRST" {
		t.Fatalf("second start: code %q, %v; want LMNPQRST (the first is taken)", d2.UserCode, err)
	}
	if n := s.count(t, `SELECT count(*) FROM device_logins WHERE code_hash = $1`, d.CodeHash[:]); n != 1 {
		t.Fatalf("rows by hash: %d", n)
	}
	err := s.DeviceLoginByUserCode(ctx, "BCDFGHJK", func(got *postgres.DeviceLogin) postgres.DeviceLoginChange {
		if got == nil || got.CodeHash != d.CodeHash || got.Status != postgres.DeviceLoginPending || got.Agent != "fieldpass/test" ||
			!got.LastPoll.IsZero() || got.Interval != 5*time.Second || !got.Expires.Equal(d.Expires) {
			t.Errorf("by user code: %+v", got)
			return postgres.DeviceLoginKeep
		}
		got.Status, got.Email, got.Session, got.MFA, got.AMR, got.ACR = postgres.DeviceLoginApproved, "alice@example.com", "tok1", true, []string{"hwk"}, "x"
		got.LastPoll, got.Interval = s.clock.Now(), 10*time.Second
		return postgres.DeviceLoginSave
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.DeviceLoginByCode(ctx, d.CodeHash, func(got *postgres.DeviceLogin) postgres.DeviceLoginChange {
		if got == nil || got.Status != postgres.DeviceLoginApproved || got.Email != "alice@example.com" || got.Session != "tok1" ||
			!got.MFA || len(got.AMR) != 1 || got.ACR != "x" || !got.LastPoll.Equal(s.clock.Now()) || got.Interval != 10*time.Second {
			t.Errorf("by code after save: %+v", got)
		}
		return postgres.DeviceLoginDelete
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.DeviceLoginByCode(ctx, d.CodeHash, func(got *postgres.DeviceLogin) postgres.DeviceLoginChange {
		if got != nil {
			t.Errorf("deleted login found: %+v", got)
		}
		return postgres.DeviceLoginKeep
	})
	if err != nil {
		t.Fatal(err)
	}

	// Expired logins are swept by the next start.
	s.clock.Add(10*time.Minute + time.Second)
	if err := s.StartDeviceLogin(ctx, newDeviceLogin(s, 3, "192.0.2.9"), lim, codes("VWXZBCDF")); err != nil {
		t.Fatal(err)
	}
	if n := s.count(t, `SELECT count(*) FROM device_logins`); n != 1 {
		t.Errorf("after the sweep: %d logins, want 1", n)
	}
	s.countsAgree(t)
}

// TestDeviceLoginCaps: past the per-client cap a client's oldest pending
// login goes; past the global cap, the oldest pending login of the client
// holding the most; approved logins are never dropped, and when only they
// are left a start is refused as unavailable.
func TestDeviceLoginCaps(t *testing.T) {
	s := mustOpen(t)
	ctx := context.Background()
	lim := postgres.DeviceLoginLimits{Max: 6, PerClient: 3}
	code := 0
	next := func() (string, error) {
		code++
		const a = "BCDFGHJKLMNPQRSTVWXZ"
		b := []byte("BBBBBBBB")
		for i, n := 7, code; n > 0; i, n = i-1, n/20 {
			b[i] = a[n%20]
		}
		return string(b), nil
	}
	n := 0
	start := func(key string) (*postgres.DeviceLogin, error) {
		n++
		s.clock.Add(time.Second)
		d := newDeviceLogin(s, n, key)
		return d, s.StartDeviceLogin(ctx, d, lim, next)
	}
	keys := func() map[string]int {
		rows, err := s.sql.Query(ctx, `SELECT client_key, count(*) FROM device_logins GROUP BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		m := map[string]int{}
		for rows.Next() {
			var k string
			var c int
			rows.Scan(&k, &c)
			m[k] = c
		}
		return m
	}
	var first *postgres.DeviceLogin
	for i := range 4 {
		d, err := start("flood")
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = d
		}
	}
	if got := keys()["flood"]; got != 3 {
		t.Errorf("per-client cap 3: flood holds %d", got)
	}
	if s.count(t, `SELECT count(*) FROM device_logins WHERE code_hash = $1`, first.CodeHash[:]) != 0 {
		t.Errorf("the flood's oldest login survived its cap")
	}
	for _, k := range []string{"a", "b", "c", "d"} {
		if _, err := start(k); err != nil {
			t.Fatal(err)
		}
	}
	if got := keys(); len(got) != 5 || got["flood"] != 2 || got["a"] != 1 || got["d"] != 1 {
		t.Errorf("past the global cap: %v, want the flood to lose one", got)
	}

	// Only approved logins: nothing can go.
	if _, err := s.sql.Exec(ctx, `UPDATE device_logins SET status = 'approved'`); err != nil {
		t.Fatal(err)
	}
	if _, err := start("e"); fieldpass.ErrorCode(err) != fieldpass.EUNAVAILABLE {
		t.Errorf("start with every login approved: %v, want unavailable", err)
	}
	s.countsAgree(t)
	if _, err := s.sql.Exec(ctx, `DELETE FROM device_logins WHERE client_key = 'flood'`); err != nil {
		t.Fatal(err)
	}
	s.countsAgree(t)
}

// countsAgree checks the per-client counts the trigger keeps against the
// rows.
func (s *store) countsAgree(t *testing.T) {
	t.Helper()
	if n := s.count(t, `
		SELECT count(*) FROM device_login_clients c FULL JOIN (
			SELECT client_key, count(*) AS logins, count(*) FILTER (WHERE status = 'pending') AS pending,
				min(started_at) FILTER (WHERE status = 'pending') AS oldest_pending
			FROM device_logins GROUP BY 1) r USING (client_key)
		WHERE c.logins IS DISTINCT FROM r.logins OR c.pending IS DISTINCT FROM r.pending
		   OR c.oldest_pending IS DISTINCT FROM r.oldest_pending`); n != 0 {
		t.Errorf("%d clients' counts disagree with their rows", n)
	}
}

// TestDeviceLoginClaimOnce: many callers racing to move an approved login
// to issuing: exactly one does.
func TestDeviceLoginClaimOnce(t *testing.T) {
	s := mustOpen(t)
	ctx := context.Background()
	d := newDeviceLogin(s, 1, "192.0.2.1")
	if err := s.StartDeviceLogin(ctx, d, postgres.DeviceLoginLimits{Max: 10, PerClient: 5}, codes("BCDFGHJK")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.sql.Exec(ctx, `UPDATE device_logins SET status = 'approved'`); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	claims := 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			err := s.DeviceLoginByCode(ctx, d.CodeHash, func(got *postgres.DeviceLogin) postgres.DeviceLoginChange {
				if got.Status != postgres.DeviceLoginApproved {
					return postgres.DeviceLoginKeep
				}
				time.Sleep(10 * time.Millisecond) // hold the lock while the others queue
				got.Status = postgres.DeviceLoginIssuing
				mu.Lock()
				claims++
				mu.Unlock()
				return postgres.DeviceLoginSave
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	s.countsAgree(t)
	if claims != 1 {
		t.Errorf("%d callers claimed the login, want 1", claims)
	}
}
