package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

// sessionSetup enrols pump-1, makes eng@example.com a user with a one-hour
// ssh grant on it, and returns the grant.
func sessionSetup(tb testing.TB, s *store) *fieldpass.Grant {
	tb.Helper()
	s.mustEnroll(tb, "pump-1", 1)
	s.mustUser(tb, "eng@example.com", fieldpass.RoleEngineer)
	return s.mustGrant(tb, fieldpass.Grant{Subject: "eng@example.com", Devices: []string{"pump-1"}, Services: []string{"ssh"}})
}

func (s *store) mustOpenSession(tb testing.TB, g *fieldpass.Grant, broker string) *fieldpass.Session {
	tb.Helper()
	sess, err := s.OpenSession(context.Background(), fieldpass.Session{
		User: "eng@example.com", Device: "pump-1", Service: "ssh", GrantID: g.ID, ClientAddr: "198.51.100.4:50123", BrokerID: broker,
	})
	if err != nil {
		tb.Fatalf("OpenSession: %v", err)
	}
	return sess
}

func TestOpenSession(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	g := sessionSetup(t, s)

	sess := s.mustOpenSession(t, g, "broker-1")
	if sess.ID == "" || sess.User != "eng@example.com" || sess.Device != "pump-1" || sess.DeviceID == "" || sess.GrantID != g.ID ||
		!sess.Start.Equal(s.clock.Now()) || !sess.Open() || sess.BrokerID != "broker-1" || sess.ClientAddr != "198.51.100.4:50123" {
		t.Errorf("session: got %+v", sess)
	}
	// Committed: another connection sees it.
	if n := s.count(t, `SELECT count(*) FROM sessions WHERE id = $1 AND ended_at IS NULL`, sess.ID); n != 1 {
		t.Errorf("committed open session rows: got %d, want 1", n)
	}

	open := func(change func(*fieldpass.Session)) error {
		in := fieldpass.Session{User: "eng@example.com", Device: "pump-1", Service: "ssh", GrantID: g.ID, BrokerID: "broker-1"}
		change(&in)
		_, err := s.OpenSession(ctx, in)
		return err
	}
	other := s.mustGrant(t, fieldpass.Grant{Subject: "someone@example.com", Devices: []string{"pump-1"}, Services: []string{"ssh"}})
	s.mustEnroll(t, "pump-2", 2)
	for _, tc := range []struct {
		name      string
		change    func(*fieldpass.Session)
		code, msg string
	}{
		{"service not granted", func(in *fieldpass.Session) { in.Service = "web" }, fieldpass.EFORBIDDEN, "does not give"},
		{"device not granted", func(in *fieldpass.Session) { in.Device = "pump-2" }, fieldpass.EFORBIDDEN, "does not give"},
		{"someone else's grant", func(in *fieldpass.Session) { in.GrantID = other.ID }, fieldpass.EFORBIDDEN, "does not give"},
		{"unknown grant", func(in *fieldpass.Session) { in.GrantID = "00000000-0000-0000-0000-000000000000" }, fieldpass.ENOTFOUND, "grant"},
		{"unknown user", func(in *fieldpass.Session) { in.User = "nobody@example.com" }, fieldpass.ENOTFOUND, "user"},
		{"unknown device", func(in *fieldpass.Session) { in.Device = "nope" }, fieldpass.ENOTFOUND, "device"},
		{"bad grant id", func(in *fieldpass.Session) { in.GrantID = "x" }, fieldpass.EINVALID, "grant id"},
		{"bad client", func(in *fieldpass.Session) { in.ClientAddr = "a b" }, fieldpass.EINVALID, "client"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantError(t, open(tc.change), tc.code, tc.msg) })
	}

	s.mustSetState(t, "pump-1", fieldpass.DeviceDisabled)
	wantError(t, open(func(*fieldpass.Session) {}), fieldpass.EFORBIDDEN, "disabled")
	s.mustSetState(t, "pump-1", fieldpass.DeviceActive)
	if _, err := s.SetUserDisabled(ctx, operator, "eng@example.com", true); err != nil {
		t.Fatal(err)
	}
	wantError(t, open(func(*fieldpass.Session) {}), fieldpass.EFORBIDDEN, "disabled")
	if _, err := s.SetUserDisabled(ctx, operator, "eng@example.com", false); err != nil {
		t.Fatal(err)
	}
	s.clock.Add(time.Hour) // the grant's end
	wantError(t, open(func(*fieldpass.Session) {}), fieldpass.EFORBIDDEN, "does not give")
	if n := s.count(t, `SELECT count(*) FROM sessions`); n != 1 {
		t.Errorf("sessions: got %d, want only the first", n)
	}
}

func TestEndSession(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	g := sessionSetup(t, s)
	sess := s.mustOpenSession(t, g, "broker-1")

	end := s.clock.Now().Add(5 * time.Minute)
	ended, err := s.EndSession(ctx, sess.ID, end, 100, 2000, fieldpass.EndClientClosed)
	if err != nil {
		t.Fatal(err)
	}
	if !ended.End.Equal(end) || ended.BytesIn != 100 || ended.BytesOut != 2000 || ended.EndReason != fieldpass.EndClientClosed || ended.Open() {
		t.Errorf("ended: got %+v", ended)
	}
	// The first end wins; later ones change nothing and record nothing.
	again, err := s.EndSession(ctx, sess.ID, end.Add(time.Minute), 1, 1, fieldpass.EndGrantRevoked)
	if err != nil || *again != *ended {
		t.Errorf("second end: got %+v, %v; want %+v", again, err, ended)
	}
	if n := s.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.end'`); n != 1 {
		t.Errorf("session.end events: got %d, want 1", n)
	}
	// Concurrent ends: still one.
	sess2 := s.mustOpenSession(t, g, "broker-1")
	var wg sync.WaitGroup
	results := make(chan *fieldpass.Session, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.EndSession(ctx, sess2.ID, time.Time{}, int64(i), int64(i), fieldpass.EndReasons[i])
			if err != nil {
				t.Errorf("EndSession: %v", err)
				return
			}
			results <- r
		}()
	}
	wg.Wait()
	close(results)
	var first *fieldpass.Session
	for r := range results {
		if first == nil {
			first = r
		} else if *r != *first {
			t.Errorf("concurrent ends disagree: %+v vs %+v", r, first)
		}
	}
	if n := s.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.end'`); n != 2 {
		t.Errorf("session.end events: got %d, want 2", n)
	}

	// An end before the start (a skewed clock) is clamped to the start.
	sess3 := s.mustOpenSession(t, g, "broker-1")
	early, err := s.EndSession(ctx, sess3.ID, sess3.Start.Add(-time.Hour), 0, 0, fieldpass.EndError)
	if err != nil || !early.End.Equal(sess3.Start) {
		t.Errorf("early end: got %+v, %v", early, err)
	}

	_, err = s.EndSession(ctx, "00000000-0000-0000-0000-000000000000", time.Time{}, 0, 0, fieldpass.EndError)
	wantError(t, err, fieldpass.ENOTFOUND, "not found")
	_, err = s.EndSession(ctx, sess.ID, time.Time{}, 0, 0, "bored")
	wantError(t, err, fieldpass.EINVALID, "end reason")
	_, err = s.EndSession(ctx, sess.ID, time.Time{}, -1, 0, fieldpass.EndError)
	wantError(t, err, fieldpass.EINVALID, "negative")

	// The database keeps ended sessions as they are.
	if _, err := s.sql.Exec(ctx, `UPDATE sessions SET bytes_in = 0 WHERE id = $1`, sess.ID); err == nil {
		t.Error("the database let an ended session be changed")
	}
	if _, err := s.sql.Exec(ctx, `DELETE FROM sessions`); err == nil {
		t.Error("the database let sessions be deleted")
	}
	s.mustOpenSession(t, g, "broker-1")
	if _, err := s.sql.Exec(ctx, `UPDATE sessions SET end_reason = 'whatever', ended_at = now() WHERE ended_at IS NULL`); err == nil {
		t.Error("the database accepted an unknown end reason")
	}
}

func TestCloseOpenSessions(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	g := sessionSetup(t, s)
	a1 := s.mustOpenSession(t, g, "broker-a")
	s.mustOpenSession(t, g, "broker-a")
	b1 := s.mustOpenSession(t, g, "broker-b")
	s.mustOpenSession(t, g, "broker-c")
	if _, err := s.EndSession(ctx, a1.ID, time.Time{}, 5, 6, fieldpass.EndClientClosed); err != nil {
		t.Fatal(err)
	}

	s.clock.Add(time.Minute)
	n, err := s.CloseOpenSessions(ctx, "broker-a", fieldpass.EndBrokerRestart)
	if err != nil || n != 1 {
		t.Fatalf("CloseOpenSessions(broker-a): got %d, %v; want 1", n, err)
	}
	if n, err := s.CloseOpenSessions(ctx, "broker-a", fieldpass.EndBrokerRestart); err != nil || n != 0 {
		t.Errorf("again: got %d, %v; want 0", n, err)
	}
	open, err := s.Sessions(ctx, fieldpass.SessionFilter{Open: true})
	if err != nil || len(open) != 2 {
		t.Fatalf("open sessions: got %d, %v; want 2", len(open), err)
	}
	n, err = s.CloseOpenSessions(ctx, postgres.AllBrokers, fieldpass.EndBrokerRestart)
	if err != nil || n != 2 {
		t.Fatalf("CloseOpenSessions(all): got %d, %v; want 2", n, err)
	}
	b, err := s.Session(ctx, b1.ID)
	if err != nil || b.EndReason != fieldpass.EndBrokerRestart || !b.End.Equal(s.clock.Now()) {
		t.Errorf("closed session: got %+v, %v", b, err)
	}
	a, err := s.Session(ctx, a1.ID)
	if err != nil || a.EndReason != fieldpass.EndClientClosed || a.BytesIn != 5 {
		t.Errorf("session ended earlier: got %+v, %v; want it untouched", a, err)
	}
	if n := s.count(t, `SELECT count(*) FROM audit_events WHERE action = 'session.end'`); n != 4 {
		t.Errorf("session.end events: got %d, want 4", n)
	}
	_, err = s.CloseOpenSessions(ctx, "", fieldpass.EndBrokerRestart)
	wantError(t, err, fieldpass.EINVALID, "broker id")

	// Listing.
	s.mustEnroll(t, "pump-2", 2)
	for _, tc := range []struct {
		name string
		f    fieldpass.SessionFilter
		want int
	}{
		{"all", fieldpass.SessionFilter{}, 4},
		{"device", fieldpass.SessionFilter{Device: "pump-1"}, 4},
		{"other device", fieldpass.SessionFilter{Device: "pump-2"}, 0},
		{"user", fieldpass.SessionFilter{User: "ENG@example.com"}, 4},
		{"other user", fieldpass.SessionFilter{User: "x@example.com"}, 0},
		{"since", fieldpass.SessionFilter{Since: s.clock.Now()}, 0},
		{"limit", fieldpass.SessionFilter{Limit: 3}, 3},
		{"open", fieldpass.SessionFilter{Open: true}, 0},
		{"service", fieldpass.SessionFilter{Service: "ssh"}, 4},
		{"other service", fieldpass.SessionFilter{Service: "web"}, 0},
		{"until", fieldpass.SessionFilter{Until: s.clock.Now().Add(time.Second)}, 4},
		{"until before", fieldpass.SessionFilter{Until: time.Unix(0, 0)}, 0},
		{"end reason", fieldpass.SessionFilter{EndReason: fieldpass.EndBrokerRestart}, 3},
		{"other end reason", fieldpass.SessionFilter{EndReason: fieldpass.EndIdleTimeout}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss, err := s.Sessions(ctx, tc.f)
			if err != nil || len(ss) != tc.want {
				t.Errorf("got %d, %v; want %d", len(ss), err, tc.want)
			}
		})
	}
	for _, f := range []fieldpass.SessionFilter{{EndReason: "nope"}, {GrantID: "x"}, {Service: "bad service"}} {
		if _, err := s.Sessions(ctx, f); fieldpass.ErrorCode(err) != fieldpass.EINVALID {
			t.Errorf("Sessions(%+v): err %v, want invalid", f, err)
		}
	}
	if _, err := s.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}
