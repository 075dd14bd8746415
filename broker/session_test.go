package broker_test

import (
	"context"
	"io"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/tunnel"
)

const (
	testOperator = "operator:test"
	engineer     = "eng@example.com"
)

// sessionEnv is a broker with one connected device "pump-1" exposing an
// echo service, a user eng@example.com, and the session manager running.
type sessionEnv struct {
	*brokertest.Env
	tb    testing.TB
	echo  *brokertest.Echo
	conn  *brokertest.Connector // pump-1's
	m     *broker.Sessions
	user  *fieldpass.User
	stopM func()
}

func newSessionEnv(tb testing.TB, mod func(*broker.SessionsConfig)) *sessionEnv {
	tb.Helper()
	e := brokertest.New(tb)
	se := &sessionEnv{Env: e, tb: tb, echo: brokertest.NewEcho(tb)}
	s := e.Enroll("pump-1")
	se.conn = e.StartConnector(s, map[string]string{"echo": se.echo.Addr}, nil)
	brokertest.WaitFor(tb, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-1") })
	ctx := context.Background()
	u, err := e.DB.EnsureUser(ctx, testOperator, engineer, []fieldpass.Role{fieldpass.RoleEngineer})
	if err != nil {
		tb.Fatal(err)
	}
	se.user = u
	se.startSessions(mod)
	return se
}

func (se *sessionEnv) startSessions(mod func(*broker.SessionsConfig)) {
	se.tb.Helper()
	cfg := broker.SessionsConfig{Logger: brokertest.Logger()}
	if mod != nil {
		mod(&cfg)
	}
	m, err := broker.NewSessions(context.Background(), se.Broker, se.DB, cfg)
	if err != nil {
		se.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	var once sync.Once
	se.m = m
	se.stopM = func() { once.Do(func() { cancel(); <-done }) }
	se.tb.Cleanup(se.stopM)
}

// grant gives eng@example.com the services on pump-1 until end (zero: an
// hour from now).
func (se *sessionEnv) grant(end time.Time, services ...string) *fieldpass.Grant {
	se.tb.Helper()
	if end.IsZero() {
		end = time.Now().Add(time.Hour)
	}
	g, err := se.DB.CreateGrant(context.Background(), testOperator, fieldpass.Grant{
		Subject: engineer, Devices: []string{"pump-1"}, Services: services, End: end, Reason: "test",
	}, 24*time.Hour)
	if err != nil {
		se.tb.Fatal(err)
	}
	return g
}

// engineerGranted makes eng@example.com an engineer with a grant of the
// services on device for an hour.
func engineerGranted(tb testing.TB, e *brokertest.Env, device string, services ...string) (*fieldpass.User, *fieldpass.Grant) {
	tb.Helper()
	ctx := context.Background()
	u, err := e.DB.EnsureUser(ctx, testOperator, engineer, []fieldpass.Role{fieldpass.RoleEngineer})
	if err != nil {
		tb.Fatal(err)
	}
	g, err := e.DB.CreateGrant(ctx, testOperator, fieldpass.Grant{
		Subject: engineer, Devices: []string{device}, Services: services, End: time.Now().Add(time.Hour), Reason: "test",
	}, 24*time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return u, g
}

func (se *sessionEnv) open(device, service string) (*broker.Session, error) {
	return se.m.Open(context.Background(), &fieldpass.Caller{User: se.user}, device, service, "127.0.0.1")
}

func (se *sessionEnv) mustOpen() *broker.Session {
	se.tb.Helper()
	s, err := se.open("pump-1", "echo")
	if err != nil {
		se.tb.Fatalf("open session: %v", err)
	}
	return s
}

func (se *sessionEnv) row(id string) *fieldpass.Session {
	se.tb.Helper()
	r, err := se.DB.Session(context.Background(), id)
	if err != nil {
		se.tb.Fatal(err)
	}
	return r
}

func (se *sessionEnv) rows() []*fieldpass.Session {
	se.tb.Helper()
	rs, err := se.DB.Sessions(context.Background(), fieldpass.SessionFilter{})
	if err != nil {
		se.tb.Fatal(err)
	}
	return rs
}

// waitEnded waits for the row of id to be ended and returns it.
func (se *sessionEnv) waitEnded(id string, timeout time.Duration) *fieldpass.Session {
	se.tb.Helper()
	var r *fieldpass.Session
	brokertest.WaitFor(se.tb, timeout, "session row ended", func() bool {
		var err error
		r, err = se.DB.Session(context.Background(), id)
		return err == nil && !r.Open()
	})
	return r
}

// waitDone waits for s to end and returns how long that took.
func waitDone(tb testing.TB, s *broker.Session, timeout time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	select {
	case <-s.Done():
		return time.Since(start)
	case <-time.After(timeout):
		tb.Fatalf("session still live after %s", timeout)
		return 0
	}
}

// holdStream opens a stream on s and reads from it until it ends; the
// returned channel is closed then.
func holdStream(tb testing.TB, s *broker.Session) (tunnel.HalfCloser, chan struct{}) {
	tb.Helper()
	st, err := s.Stream(context.Background())
	if err != nil {
		tb.Fatalf("stream: %v", err)
	}
	if _, err := st.Write([]byte("ping")); err != nil {
		tb.Fatal(err)
	}
	// The echo is back before the caller cuts anything, so 4 bytes each way
	// are what the session's row must say, however loaded the machine.
	echo := make([]byte, 4)
	if _, err := io.ReadFull(st, echo); err != nil || string(echo) != "ping" {
		tb.Fatalf("echo: %q, %v", echo, err)
	}
	closed := make(chan struct{})
	go func() { io.Copy(io.Discard, st); close(closed) }()
	return st, closed
}

func TestSessionStreamsAreCounted(t *testing.T) {
	se := newSessionEnv(t, nil)
	g := se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	r := se.row(s.ID())
	if !r.Open() || r.GrantID != g.ID || r.User != engineer || r.Device != "pump-1" || r.Service != "echo" || r.BrokerID != "test-broker" || r.ClientAddr != "127.0.0.1" {
		t.Fatalf("row at open: %+v", r)
	}
	// Many streams, one after another and at once, all on one session.
	var total int64
	for _, n := range []int{1, 1000, 256 << 10} {
		st, err := s.Stream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, st, n)
		total += int64(n)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.Stream(context.Background())
			if err != nil {
				errc <- err
				return
			}
			msg := []byte(strings.Repeat("x", 5000))
			st.Write(msg)
			st.CloseWrite()
			got, err := io.ReadAll(st)
			if err == nil && len(got) != len(msg) {
				err = io.ErrShortBuffer
			}
			errc <- err
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	total += 20 * 5000
	if n := se.echo.Accepted(); n != 23 {
		t.Errorf("service saw %d connections, want 23", n)
	}
	s.End(fieldpass.EndClientClosed)
	r = se.waitEnded(s.ID(), 5*time.Second)
	if r.EndReason != fieldpass.EndClientClosed || r.BytesIn != total || r.BytesOut != total {
		t.Fatalf("row at end: reason %s, in %d, out %d; want client_closed, %d each way", r.EndReason, r.BytesIn, r.BytesOut, total)
	}
	if _, err := s.Stream(context.Background()); err == nil {
		t.Fatal("stream opened on an ended session")
	}
	// End again changes nothing.
	s.End(fieldpass.EndError)
	if s.Reason() != fieldpass.EndClientClosed {
		t.Fatalf("reason after a second end: %s", s.Reason())
	}
}

func TestSessionRefusalsOpenNothing(t *testing.T) {
	se := newSessionEnv(t, nil)
	ctx := context.Background()
	se.Enroll("pump-2") // enrolled, never connected: offline
	se.Enroll("pump-3")
	if _, err := se.DB.SetDeviceState(ctx, "pump-3", fieldpass.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	grantOn := func(device string, end time.Time, services ...string) *fieldpass.Grant {
		g, err := se.DB.CreateGrant(ctx, testOperator, fieldpass.Grant{Subject: engineer, Devices: []string{device}, Services: services, End: end, Reason: "test"}, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	hour := time.Now().Add(time.Hour)
	grantOn("pump-2", hour, "echo")
	grantOn("pump-3", hour, "echo")
	// A grant on pump-1 for another service only, and one that expires.
	grantOn("pump-1", hour, "web")
	short := grantOn("pump-1", time.Now().Add(1500*time.Millisecond), "ssh")
	time.Sleep(time.Until(short.End) + 100*time.Millisecond)

	for _, tc := range []struct {
		name, device, service string
		user                  *fieldpass.User
		code, msg             string
		reason                fieldpass.DenyReason
	}{
		{"no grant", "pump-1", "echo", se.user, fieldpass.EFORBIDDEN, "no grant covers pump-1/echo for eng@example.com", fieldpass.DenyNoGrant},
		{"other service", "pump-1", "telnet", se.user, fieldpass.EFORBIDDEN, "no grant covers", fieldpass.DenyNoGrant},
		{"grant expired", "pump-1", "ssh", se.user, fieldpass.EEXPIRED, "expired", fieldpass.DenyGrantExpired},
		{"device offline", "pump-2", "echo", se.user, fieldpass.EUNAVAILABLE, "offline", fieldpass.DenyDeviceOffline},
		{"device disabled", "pump-3", "echo", se.user, fieldpass.EFORBIDDEN, "disabled", fieldpass.DenyDeviceDisabled},
		{"no such device", "pump-9", "echo", se.user, fieldpass.ENOTFOUND, "not found", fieldpass.DenyDeviceUnknown},
		{"user disabled", "pump-1", "web", &fieldpass.User{Email: engineer, Disabled: true}, fieldpass.EFORBIDDEN, "disabled", fieldpass.DenyUserDisabled},
		{"bad service", "pump-1", "no such", se.user, fieldpass.EINVALID, "", fieldpass.DenyInvalid},
		{"no caller", "pump-1", "web", nil, fieldpass.EFORBIDDEN, "no caller", fieldpass.DenyUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *fieldpass.Caller
			if tc.user != nil {
				c = &fieldpass.Caller{User: tc.user}
			}
			s, err := se.m.Open(ctx, c, tc.device, tc.service, "127.0.0.1")
			if err == nil {
				s.End(fieldpass.EndError)
				t.Fatal("opened")
			}
			if s != nil {
				t.Fatalf("non-nil session with error %v", err)
			}
			if fieldpass.ErrorCode(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %s containing %q", err, tc.code, tc.msg)
			}
			if got := fieldpass.DenyReasonOf(err); got != tc.reason {
				t.Fatalf("reason = %q, want %q", got, tc.reason)
			}
		})
	}
	t.Run("revoked", func(t *testing.T) {
		g := se.grant(time.Time{}, "echo")
		if _, err := se.DB.RevokeGrant(ctx, testOperator, g.ID); err != nil {
			t.Fatal(err)
		}
		_, err := se.open("pump-1", "echo")
		if fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN || !strings.Contains(err.Error(), "revoked") || fieldpass.DenyReasonOf(err) != fieldpass.DenyGrantRevoked {
			t.Fatalf("err = %v (reason %q), want forbidden naming the revocation, grant_revoked", err, fieldpass.DenyReasonOf(err))
		}
	})
	t.Run("user disabled in the store", func(t *testing.T) {
		if _, err := se.DB.SetUserDisabled(ctx, testOperator, engineer, true); err != nil {
			t.Fatal(err)
		}
		defer se.DB.SetUserDisabled(ctx, testOperator, engineer, false)
		_, err := se.open("pump-1", "web")
		if fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN || !strings.Contains(err.Error(), "disabled") || fieldpass.DenyReasonOf(err) != fieldpass.DenyUserDisabled {
			t.Fatalf("err = %v (reason %q), want forbidden: disabled, user_disabled", err, fieldpass.DenyReasonOf(err))
		}
	})
	if rs := se.rows(); len(rs) != 0 {
		t.Fatalf("refusals left %d session rows: %+v", len(rs), rs[0])
	}
	if n := se.echo.Accepted(); n != 0 {
		t.Fatalf("refusals reached the service %d times", n)
	}
	if se.m.Live() != 0 {
		t.Fatalf("%d live sessions after refusals", se.m.Live())
	}
}

// endsWithin opens a session with a stream, runs cut, and checks that the
// session and its stream end within a second with reason, recorded.
func (se *sessionEnv) endsWithin(t *testing.T, reason fieldpass.EndReason, cut func(*broker.Session) time.Time) {
	t.Helper()
	s := se.mustOpen()
	st, closed := holdStream(t, s)
	defer st.Close()
	at := cut(s)
	waitDone(t, s, 3*time.Second)
	took := time.Since(at)
	select {
	case <-closed:
	case <-time.After(time.Second):
		t.Fatal("stream still open after the session ended")
	}
	if took > time.Second {
		t.Errorf("session ended %s after the cause, want within 1s", took)
	}
	t.Logf("%s: session cut %s after the cause", reason, took.Round(time.Millisecond))
	if s.Reason() != reason {
		t.Errorf("reason %s, want %s", s.Reason(), reason)
	}
	r := se.waitEnded(s.ID(), 5*time.Second)
	if r.EndReason != reason || r.BytesIn != 4 || r.BytesOut != 4 {
		t.Errorf("row: reason %s, in %d, out %d; want %s, 4 each way", r.EndReason, r.BytesIn, r.BytesOut, reason)
	}
}

func TestSessionCutOnRevoke(t *testing.T) {
	se := newSessionEnv(t, nil)
	g := se.grant(time.Time{}, "echo")
	se.endsWithin(t, fieldpass.EndGrantRevoked, func(*broker.Session) time.Time {
		time.Sleep(50 * time.Millisecond) // the echo comes back first
		at := time.Now()
		if _, err := se.DB.RevokeGrant(context.Background(), testOperator, g.ID); err != nil {
			t.Fatal(err)
		}
		return at
	})
}

func TestSessionCutOnExpiry(t *testing.T) {
	se := newSessionEnv(t, nil)
	g := se.grant(time.Now().Add(2*time.Second), "echo")
	se.endsWithin(t, fieldpass.EndGrantExpired, func(*broker.Session) time.Time {
		time.Sleep(time.Until(g.End))
		return g.End
	})
}

func TestSessionCutOnUserDisabled(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	se.endsWithin(t, fieldpass.EndUserDisabled, func(*broker.Session) time.Time {
		time.Sleep(50 * time.Millisecond)
		at := time.Now()
		if _, err := se.DB.SetUserDisabled(context.Background(), testOperator, engineer, true); err != nil {
			t.Fatal(err)
		}
		return at
	})
}

func TestSessionCutOnDeviceDisabled(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	se.endsWithin(t, fieldpass.EndDeviceDisabled, func(*broker.Session) time.Time {
		time.Sleep(50 * time.Millisecond)
		at := time.Now()
		if _, err := se.DB.SetDeviceState(context.Background(), "pump-1", fieldpass.DeviceDisabled); err != nil {
			t.Fatal(err)
		}
		return at
	})
}

func TestSessionCutByAdmin(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	_, closed := holdStream(t, s)
	time.Sleep(50 * time.Millisecond)
	// What the API's end handler does: end the row, nothing else.
	at := time.Now()
	if _, err := se.DB.EndSession(context.Background(), s.ID(), time.Time{}, 0, 0, fieldpass.EndByAdmin); err != nil {
		t.Fatal(err)
	}
	waitDone(t, s, 3*time.Second)
	took := time.Since(at)
	<-closed
	if took > 1500*time.Millisecond {
		t.Errorf("cut %s after the admin ended it, want about a second", took)
	}
	if s.Reason() != fieldpass.EndByAdmin {
		t.Errorf("reason %s, want ended_by_admin", s.Reason())
	}
	t.Logf("admin end: cut after %s", took.Round(time.Millisecond))
}

func TestSessionIdleTimeout(t *testing.T) {
	se := newSessionEnv(t, func(c *broker.SessionsConfig) { c.IdleTimeout = 1500 * time.Millisecond })
	se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	st, err := s.Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Traffic keeps it alive past the timeout.
	buf := make([]byte, 1)
	for i := 0; i < 6; i++ {
		st.Write([]byte("a"))
		if _, err := io.ReadFull(st, buf); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	select {
	case <-s.Done():
		t.Fatalf("ended (%s) while carrying traffic", s.Reason())
	default:
	}
	start := time.Now()
	waitDone(t, s, 5*time.Second)
	if d := time.Since(start); d < time.Second {
		t.Errorf("idle end after %s, want about 1.5s", d)
	}
	r := se.waitEnded(s.ID(), 5*time.Second)
	if r.EndReason != fieldpass.EndIdleTimeout || r.BytesIn != 6 || r.BytesOut != 6 {
		t.Fatalf("row: %s in %d out %d; want idle_timeout, 6 each way", r.EndReason, r.BytesIn, r.BytesOut)
	}
}

func TestSessionDeviceTunnelLost(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	_, closed := holdStream(t, s)
	se.Stop() // the broker goes away with the device's tunnel
	waitDone(t, s, 5*time.Second)
	<-closed
	if s.Reason() != fieldpass.EndDeviceClosed {
		t.Fatalf("reason %s, want device_closed", s.Reason())
	}
}

func TestSessionsClosedAtRestart(t *testing.T) {
	se := newSessionEnv(t, nil)
	g := se.grant(time.Time{}, "echo")
	ctx := context.Background()
	// Rows a crashed run of this broker left open, and one of another broker.
	var mine []string
	for i := 0; i < 3; i++ {
		r, err := se.DB.OpenSession(ctx, fieldpass.Session{User: engineer, Device: "pump-1", Service: "echo", GrantID: g.ID, BrokerID: "test-broker"})
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, r.ID)
	}
	other, err := se.DB.OpenSession(ctx, fieldpass.Session{User: engineer, Device: "pump-1", Service: "echo", GrantID: g.ID, BrokerID: "other-broker"})
	if err != nil {
		t.Fatal(err)
	}
	se.stopM()
	se.startSessions(nil)
	for _, id := range mine {
		if r := se.row(id); r.Open() || r.EndReason != fieldpass.EndBrokerRestart {
			t.Errorf("row %s after restart: open %v reason %s; want broker_restart", id, r.Open(), r.EndReason)
		}
	}
	if r := se.row(other.ID); !r.Open() {
		t.Errorf("another broker's session was closed: %s", r.EndReason)
	}
	// Live sessions still open fine.
	s := se.mustOpen()
	s.End("")
}

// blockDatabase cuts every connection to the test's database and refuses
// new ones until the returned function is called.
func (se *sessionEnv) blockDatabase(t *testing.T) (restore func()) {
	t.Helper()
	ctx := context.Background()
	u, err := url.Parse(se.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin, err := pgx.Connect(ctx, pgtest.ClusterURL(t))
	if err != nil {
		t.Fatal(err)
	}
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+ident+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			if _, err := admin.Exec(ctx, "ALTER DATABASE "+ident+" ALLOW_CONNECTIONS true"); err != nil {
				t.Error(err)
			}
			admin.Close(ctx)
		})
	}
	t.Cleanup(restore)
	return restore
}

func TestSessionAuditOutage(t *testing.T) {
	const grace = 2 * time.Second
	se := newSessionEnv(t, func(c *broker.SessionsConfig) { c.AuditGrace = grace })
	se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	st, err := s.Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	echo := func() error {
		if _, err := st.Write([]byte("ping")); err != nil {
			return err
		}
		_, err := io.ReadFull(st, buf)
		return err
	}
	if err := echo(); err != nil {
		t.Fatal(err)
	}

	restore := se.blockDatabase(t)
	down := time.Now()
	// New sessions are refused with a clear message.
	_, err = se.open("pump-1", "echo")
	if fieldpass.ErrorCode(err) != fieldpass.EUNAVAILABLE || !strings.Contains(err.Error(), "audit store unavailable: new sessions are refused") ||
		fieldpass.DenyReasonOf(err) != fieldpass.DenyAuditUnavailable {
		t.Fatalf("open during outage: %v (reason %q)", err, fieldpass.DenyReasonOf(err))
	}
	// The live one carries on through the grace...
	time.Sleep(grace / 2)
	if err := echo(); err != nil {
		t.Fatalf("live session cut inside the grace: %v (reason %s)", err, s.Reason())
	}
	// ...and ends after it.
	waitDone(t, s, grace+3*time.Second)
	t.Logf("session ended %s after the store went down (grace %s)", time.Since(down).Round(time.Millisecond), grace)
	if s.Reason() != fieldpass.EndAuditUnavailable {
		t.Fatalf("reason %s, want audit_unavailable", s.Reason())
	}
	if se.m.Pending() != 1 {
		t.Fatalf("%d ends held, want 1", se.m.Pending())
	}
	restore()
	r := se.waitEnded(s.ID(), 20*time.Second)
	if r.EndReason != fieldpass.EndAuditUnavailable || r.BytesIn != 8 || r.BytesOut != 8 {
		t.Fatalf("row once the store is back: %s in %d out %d; want audit_unavailable, 8 each way", r.EndReason, r.BytesIn, r.BytesOut)
	}
	brokertest.WaitFor(t, 5*time.Second, "no ends held", func() bool { return se.m.Pending() == 0 })
	// And new sessions open again.
	brokertest.WaitFor(t, 10*time.Second, "sessions open again", func() bool {
		s, err := se.open("pump-1", "echo")
		if err == nil {
			s.End("")
		}
		return err == nil
	})
}

// TestSessionEndHeldThroughOutage: a session that ends inside the grace
// keeps its own reason, written once the store is back.
func TestSessionEndHeldThroughOutage(t *testing.T) {
	se := newSessionEnv(t, func(c *broker.SessionsConfig) { c.AuditGrace = time.Minute })
	se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	st, _ := holdStream(t, s)
	defer st.Close()
	restore := se.blockDatabase(t)
	time.Sleep(1500 * time.Millisecond)
	s.End(fieldpass.EndClientClosed)
	time.Sleep(1500 * time.Millisecond)
	if se.m.Pending() != 1 {
		t.Fatalf("%d ends held, want 1", se.m.Pending())
	}
	restore()
	r := se.waitEnded(s.ID(), 20*time.Second)
	if r.EndReason != fieldpass.EndClientClosed || r.BytesIn != 4 {
		t.Fatalf("row: %s in %d; want client_closed, 4", r.EndReason, r.BytesIn)
	}
}

// An open session's row shows the bytes carried so far, within
// BytesInterval, not 0/0 until it ends.
func TestSessionLiveBytes(t *testing.T) {
	se := newSessionEnv(t, func(c *broker.SessionsConfig) { c.BytesInterval = 500 * time.Millisecond })
	se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	st, err := s.Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	roundTrip(t, st, 10000)
	brokertest.WaitFor(t, 5*time.Second, "live row showing 10000 bytes each way", func() bool {
		r := se.row(s.ID())
		return r.Open() && r.BytesIn == 10000 && r.BytesOut == 10000
	})
	st2, err := s.Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, st2, 5000)
	s.End(fieldpass.EndClientClosed)
	if r := se.waitEnded(s.ID(), 5*time.Second); r.BytesIn != 15000 || r.BytesOut != 15000 {
		t.Fatalf("ended row: %d/%d bytes, want 15000 each way", r.BytesIn, r.BytesOut)
	}
}
