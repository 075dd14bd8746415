package broker_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/metrics"
)

// opsServer serves the operations routes of e's broker with the metrics of
// reg, as fieldpass-broker serve --metrics-listen does.
func opsServer(tb testing.TB, e *brokertest.Env, reg *prometheus.Registry) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(apiserver.OpsRoutes(metrics.Handler(reg), e.Broker.Ready))
	tb.Cleanup(srv.Close)
	return srv
}

func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestMetricsScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	bm := metrics.NewBroker(reg)
	e := brokertest.New(t, brokertest.WithBrokerConfig(func(c *broker.Config) { c.Metrics = bm }))
	ops := opsServer(t, e, reg)
	echo := brokertest.NewEcho(t)
	e.StartConnector(e.Enroll("pump-1"), map[string]string{"echo": echo.Addr}, nil)
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-1") })

	ctx := context.Background()
	u, err := e.DB.EnsureUser(ctx, testOperator, engineer, []fieldpass.Role{fieldpass.RoleEngineer})
	if err != nil {
		t.Fatal(err)
	}
	m, err := broker.NewSessions(ctx, e.Broker, e.DB, broker.SessionsConfig{Metrics: bm, Logger: brokertest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.CreateGrant(ctx, testOperator, fieldpass.Grant{
		Subject: engineer, Devices: []string{"pump-1"}, Services: []string{"echo"}, End: time.Now().Add(time.Hour), Reason: "test",
	}, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Open(ctx, &fieldpass.Caller{User: u}, "pump-1", "ssh", "127.0.0.1"); fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN {
		t.Fatalf("open without a grant: got %v, want forbidden", err)
	}
	s, err := m.Open(ctx, &fieldpass.Caller{User: u}, "pump-1", "echo", "127.0.0.1")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	st, err := s.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte("ping"))
	st.CloseWrite()
	if got, err := io.ReadAll(st); err != nil || string(got) != "ping" {
		t.Fatalf("echo: got %q, %v", got, err)
	}
	st.Close()

	want := []string{
		`fieldpass_devices_online 1`,
		`fieldpass_handshakes_total{result="ok"} 1`,
		`fieldpass_reconnects_total 0`,
		`fieldpass_sessions_active 1`,
		`fieldpass_sessions_opened_total 1`,
		`fieldpass_sessions_denied_total{reason="no_grant"} 1`,
		`fieldpass_session_bytes_in_total 4`,
		`fieldpass_session_bytes_out_total 4`,
		`fieldpass_audit_write_seconds_count{op="open_session"} 1`,
		`fieldpass_postgres_errors_total 0`,
	}
	var body string
	brokertest.WaitFor(t, 5*time.Second, "devices online in the scrape", func() bool {
		_, body = get(t, ops.URL+"/metrics")
		return strings.Contains(body, want[0]+"\n")
	})
	for _, w := range want {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("scrape lacks %q; got:\n%s", w, body)
		}
	}

	s.End(fieldpass.EndClientClosed)
	brokertest.WaitFor(t, 5*time.Second, "session end recorded", func() bool {
		_, body = get(t, ops.URL+"/metrics")
		return strings.Contains(body, `fieldpass_audit_write_seconds_count{op="end_session"} 1`+"\n")
	})
	for _, w := range []string{`fieldpass_sessions_active 0`, `fieldpass_sessions_ended_total{reason="client_closed"} 1`} {
		if !strings.Contains(body, w+"\n") {
			t.Errorf("scrape lacks %q; got:\n%s", w, body)
		}
	}
}

func TestReadyz(t *testing.T) {
	e := brokertest.New(t)
	ops := opsServer(t, e, prometheus.NewRegistry())
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, ops.URL+path); code != http.StatusOK {
			t.Errorf("GET %s: got %d %q, want 200", path, code, body)
		}
	}
	if code, body := get(t, ops.URL+"/readyz"); body != "ready\n" {
		t.Errorf("GET /readyz: got %d %q, want 200 \"ready\"", code, body)
	}

	e.DB.Close() // Postgres out of reach
	code, body := get(t, ops.URL+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "postgres unreachable") {
		t.Errorf("GET /readyz with the store closed: got %d %q, want 503 naming postgres", code, body)
	}
	if code, _ := get(t, ops.URL+"/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz with the store closed: got %d, want 200 (the process is alive)", code)
	}

	e.Stop() // closes WireGuard
	if code, body := get(t, ops.URL+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "wireguard") {
		t.Errorf("GET /readyz after Close: got %d %q, want 503 naming wireguard", code, body)
	}
}
