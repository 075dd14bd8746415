package apiserver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/postgres"
)

const (
	connectOperator = "operator:test"
	connectEngineer = "eng@example.com"
)

// connectEnv is the whole path in one process: Postgres, a broker with its
// session manager, the API on an httptest server, and a real connector over
// WireGuard on loopback exposing an echo service as device "pump-1".
type connectEnv struct {
	env      *brokertest.Env
	db       *postgres.DB
	b        *broker.Broker
	sessions *broker.Sessions
	srv      *httptest.Server
	token    string
	echo     *brokertest.Echo // counts the connections the echo service accepted
}

func newConnectEnv(t *testing.T) *connectEnv {
	t.Helper()
	ctx := context.Background()
	e := &connectEnv{}
	e.env = brokertest.New(t, brokertest.WithAPIConfig(func(env *brokertest.Env, cfg *apiserver.Config) {
		m := env.StartSessions(broker.SessionsConfig{})
		e.sessions, cfg.Sessions = m, m
	}))
	e.db, e.b, e.srv = e.env.DB, e.env.Broker, e.env.API

	e.echo = brokertest.NewEcho(t)
	e.startDevice("pump-1", map[string]string{"echo": e.echo.Addr})
	brokertest.WaitFor(t, 20*time.Second, "pump-1 online", func() bool { return e.b.Connected("pump-1") })

	if _, err := e.db.EnsureUser(ctx, connectOperator, connectEngineer, []fieldpass.Role{fieldpass.RoleEngineer}); err != nil {
		t.Fatal(err)
	}
	var err error
	e.token, _, err = e.db.IssueToken(ctx, connectOperator, connectEngineer, fieldpass.TokenCLI, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// startDevice enrols name and runs its connector; services nil enrols only.
func (e *connectEnv) startDevice(name string, services map[string]string) {
	st := e.env.Enroll(name)
	if services != nil {
		e.env.StartConnector(st, services, nil)
	}
}

func (e *connectEnv) grant(t *testing.T, device string, end time.Time, services ...string) *fieldpass.Grant {
	t.Helper()
	if end.IsZero() {
		end = time.Now().Add(time.Hour)
	}
	g, err := e.db.CreateGrant(context.Background(), connectOperator, fieldpass.Grant{
		Subject: connectEngineer, Devices: []string{device}, Services: services, End: end, Reason: "test",
	}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func (e *connectEnv) client() *httpapi.Client { return httpapi.NewClient(e.srv.URL, e.token) }

func (e *connectEnv) rows(t *testing.T) []*fieldpass.Session {
	t.Helper()
	rs, err := e.db.Sessions(context.Background(), fieldpass.SessionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func (e *connectEnv) waitEnded(t *testing.T) *fieldpass.Session {
	t.Helper()
	var r *fieldpass.Session
	brokertest.WaitFor(t, 5*time.Second, "session row ended", func() bool {
		rs := e.rows(t)
		if len(rs) != 1 {
			t.Fatalf("%d session rows, want 1", len(rs))
		}
		r = rs[0]
		return !r.Open()
	})
	return r
}

// echoThrough sends n bytes through a new stream of conn and checks the echo.
func echoThrough(t *testing.T, conn *httpapi.Conn, n int) {
	t.Helper()
	st, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, n)
	rand.Read(want)
	errc := make(chan error, 1)
	go func() {
		_, err := st.Write(want)
		if err == nil {
			err = st.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo: got %d bytes, want %d identical", len(got), n)
	}
}

func TestConnectCarriesStreamsOnOneSession(t *testing.T) {
	e := newConnectEnv(t)
	g := e.grant(t, "pump-1", time.Time{}, "echo")
	ctx := context.Background()
	conn, err := e.client().Connect(ctx, "pump-1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, n := range []int{1, 10 << 10, 1 << 20} {
		echoThrough(t, conn, n)
		total += int64(n)
	}
	errc := make(chan error, 10)
	for i := 0; i < 10; i++ {
		go func() {
			st, err := conn.OpenStream()
			if err != nil {
				errc <- err
				return
			}
			st.Write([]byte("hello"))
			st.CloseWrite()
			got, err := io.ReadAll(st)
			if err == nil && string(got) != "hello" {
				err = errors.New("bad echo " + string(got))
			}
			errc <- err
		}()
	}
	for i := 0; i < 10; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	total += 50
	if rs := e.rows(t); len(rs) != 1 || !rs[0].Open() || rs[0].GrantID != g.ID || rs[0].ClientAddr != "127.0.0.1" {
		t.Fatalf("rows while connected: %+v", rs)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	r := e.waitEnded(t)
	if r.EndReason != fieldpass.EndClientClosed || r.BytesIn != total || r.BytesOut != total {
		t.Fatalf("row: %s in %d out %d; want client_closed, %d each way", r.EndReason, r.BytesIn, r.BytesOut, total)
	}
	select {
	case <-conn.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed after Close")
	}
}

func TestConnectRefusals(t *testing.T) {
	e := newConnectEnv(t)
	ctx := context.Background()
	e.startDevice("pump-2", nil) // enrolled, offline
	e.startDevice("pump-3", nil)
	if _, err := e.db.SetDeviceState(ctx, "pump-3", fieldpass.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	e.grant(t, "pump-2", time.Time{}, "echo")
	e.grant(t, "pump-3", time.Time{}, "echo")
	short := e.grant(t, "pump-1", time.Now().Add(1200*time.Millisecond), "ssh")
	time.Sleep(time.Until(short.End) + 100*time.Millisecond)

	for _, tc := range []struct {
		name, device, service, code, msg string
	}{
		{"no grant", "pump-1", "echo", fieldpass.EFORBIDDEN, "no grant covers pump-1/echo for eng@example.com"},
		{"grant expired", "pump-1", "ssh", fieldpass.EEXPIRED, "expired"},
		{"device offline", "pump-2", "echo", fieldpass.EUNAVAILABLE, "offline"},
		{"device disabled", "pump-3", "echo", fieldpass.EFORBIDDEN, "disabled"},
		{"no such device", "pump-9", "echo", fieldpass.ENOTFOUND, "not found"},
		{"missing service", "pump-1", "", fieldpass.EINVALID, "service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := e.client().Connect(ctx, tc.device, tc.service)
			if err == nil {
				conn.Close()
				t.Fatal("connected")
			}
			var fe *fieldpass.Error
			if !errors.As(err, &fe) || fe.Code != tc.code || !strings.Contains(fe.Message, tc.msg) {
				t.Fatalf("err = %#v, want %s containing %q", err, tc.code, tc.msg)
			}
		})
	}
	t.Run("no token", func(t *testing.T) {
		_, err := httpapi.NewClient(e.srv.URL, "").Connect(ctx, "pump-1", "echo")
		if err == nil {
			t.Fatal("connected without a token")
		}
	})
	t.Run("bad token", func(t *testing.T) {
		_, err := httpapi.NewClient(e.srv.URL, "fpt_"+strings.Repeat("A", 43)).Connect(ctx, "pump-1", "echo")
		if err == nil {
			t.Fatal("connected with a forged token")
		}
	})

	// The status codes at the edge, and upgrades the broker will not do.
	e.grant(t, "pump-1", time.Time{}, "web")
	for _, tc := range []struct {
		name    string
		query   string
		headers map[string]string
		status  int
	}{
		{"forbidden is 403", "device=pump-1&service=echo", nil, http.StatusForbidden},
		{"expired is 410", "device=pump-1&service=ssh", nil, http.StatusGone},
		{"offline is 503", "device=pump-2&service=echo", nil, http.StatusServiceUnavailable},
		{"unknown device is 404", "device=pump-9&service=echo", nil, http.StatusNotFound},
		{"no subprotocol", "device=pump-1&service=web", map[string]string{"Sec-WebSocket-Protocol": ""}, http.StatusBadRequest},
		{"not a websocket", "device=pump-1&service=web", map[string]string{"Upgrade": ""}, http.StatusBadRequest},
		{"cross origin", "device=pump-1&service=web", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+httpapi.ConnectPath+"?"+tc.query, nil)
			req.Header.Set("Authorization", "Bearer "+e.token)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			req.Header.Set("Sec-WebSocket-Protocol", httpapi.ConnectSubprotocol)
			for k, v := range tc.headers {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	if rs := e.rows(t); len(rs) != 0 {
		t.Fatalf("refusals left %d session rows", len(rs))
	}
	if n := e.echo.Accepted(); n != 0 {
		t.Fatalf("refusals reached the service %d times", n)
	}
}

func TestConnectUnexposedService(t *testing.T) {
	e := newConnectEnv(t)
	e.grant(t, "pump-1", time.Time{}, "ssh")
	conn, err := e.client().Connect(context.Background(), "pump-1", "ssh")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = conn.OpenStream()
	if fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND || !strings.Contains(err.Error(), "ssh") {
		t.Fatalf("stream to a service the device does not expose: %v, want not_found naming it", err)
	}
}

// cutWithin connects, holds a stream open, runs cut, and checks the client
// learns of the end, with its reason, within a second.
func (e *connectEnv) cutWithin(t *testing.T, reason fieldpass.EndReason, cut func() time.Time) {
	t.Helper()
	conn, err := e.client().Connect(context.Background(), "pump-1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("ping"))
	closed := make(chan struct{})
	go func() { io.Copy(io.Discard, st); close(closed) }()
	at := cut()
	select {
	case <-conn.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("connection still open 3s after the cause")
	}
	took := time.Since(at)
	<-closed
	if took > time.Second {
		t.Errorf("client saw the end %s after the cause, want within 1s", took)
	}
	t.Logf("%s: client cut %s after the cause", reason, took.Round(time.Millisecond))
	if conn.Reason() != string(reason) {
		t.Errorf("client's reason %q, want %q", conn.Reason(), reason)
	}
	r := e.waitEnded(t)
	if r.EndReason != reason || r.BytesIn != 4 || r.BytesOut != 4 {
		t.Errorf("row: %s in %d out %d; want %s, 4 each way", r.EndReason, r.BytesIn, r.BytesOut, reason)
	}
	if _, err := conn.OpenStream(); err == nil || !strings.Contains(err.Error(), string(reason)) {
		t.Errorf("stream after the end: %v, want an error naming %s", err, reason)
	}
}

func TestConnectCutOnRevoke(t *testing.T) {
	e := newConnectEnv(t)
	g := e.grant(t, "pump-1", time.Time{}, "echo")
	e.cutWithin(t, fieldpass.EndGrantRevoked, func() time.Time {
		time.Sleep(100 * time.Millisecond)
		at := time.Now()
		if _, err := e.db.RevokeGrant(context.Background(), connectOperator, g.ID); err != nil {
			t.Fatal(err)
		}
		return at
	})
}

func TestConnectCutOnExpiry(t *testing.T) {
	e := newConnectEnv(t)
	g := e.grant(t, "pump-1", time.Now().Add(2*time.Second), "echo")
	e.cutWithin(t, fieldpass.EndGrantExpired, func() time.Time {
		time.Sleep(time.Until(g.End))
		return g.End
	})
}
