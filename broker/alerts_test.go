package broker_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/connector/httpsenroll"
	"github.com/fieldpass/fieldpass/httpapi"
)

var alertSecret = []byte("broker-test-alert-secret")

// alertSink is a webhook receiver that keeps the alerts whose signature
// checks out.
type alertSink struct {
	mu  sync.Mutex
	got []alerts.Alert
	bad int
}

func (s *alertSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var a alerts.Alert
	s.mu.Lock()
	defer s.mu.Unlock()
	if !alerts.Verify(alertSecret, body, r.Header.Get("X-Fieldpass-Signature")) || json.Unmarshal(body, &a) != nil ||
		a.ID != r.Header.Get("X-Fieldpass-Delivery") {
		s.bad++
		http.Error(w, "bad delivery", http.StatusBadRequest)
		return
	}
	s.got = append(s.got, a)
}

// of returns the alerts of kind received so far.
func (s *alertSink) of(kind alerts.Kind) []alerts.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []alerts.Alert
	for _, a := range s.got {
		if a.Kind == kind {
			out = append(out, a)
		}
	}
	return out
}

// newAlerts runs a Notifier delivering to a new alertSink until tb ends.
func newAlerts(tb testing.TB) (*alerts.Notifier, *alertSink) {
	tb.Helper()
	sink := &alertSink{}
	srv := httptest.NewServer(sink)
	n, err := alerts.New(alerts.Config{URL: srv.URL, Secret: alertSecret, MinBackoff: 10 * time.Millisecond, Logger: brokertest.Logger()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		if sink.bad > 0 {
			tb.Errorf("%d deliveries with a bad signature or body", sink.bad)
		}
	})
	return n, sink
}

// TestAlertsEnrolGrantOffline: an enrolment, a grant for a vendor (not one
// for an engineer) and a device offline past the threshold each raise one
// signed alert.
func TestAlertsEnrolGrantOffline(t *testing.T) {
	n, sink := newAlerts(t)
	e := brokertest.New(t,
		brokertest.WithBrokerConfig(func(c *broker.Config) { c.Alerts, c.OfflineAlertAfter = n, 300*time.Millisecond }),
		brokertest.WithAPIConfig(func(_ *brokertest.Env, c *apiserver.Config) { c.Alerts = n }),
	)
	ctx := context.Background()

	s := e.Enroll("pump-9")
	brokertest.WaitFor(t, 5*time.Second, "device_enrolled alert", func() bool { return len(sink.of(alerts.DeviceEnrolled)) == 1 })
	if a := sink.of(alerts.DeviceEnrolled)[0]; a.Device != "pump-9" || a.Details["device_id"] != s.DeviceID {
		t.Errorf("device_enrolled: got %+v, want device pump-9 id %s", a, s.DeviceID)
	}

	if _, err := e.DB.EnsureUser(ctx, testOperator, "admin@example.com", []fieldpass.Role{fieldpass.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.EnsureUser(ctx, testOperator, engineer, []fieldpass.Role{fieldpass.RoleEngineer}); err != nil {
		t.Fatal(err)
	}
	tok, _, err := e.DB.IssueToken(ctx, testOperator, "admin@example.com", fieldpass.TokenCLI, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	admin := httpapi.NewClient(e.URL, tok)
	for _, subject := range []string{engineer, "tech@vendor.example"} {
		if _, err := admin.CreateGrant(ctx, httpapi.GrantCreate{
			Subject: subject, Devices: []string{"pump-9"}, Services: []string{"ssh"}, Duration: "1h", Reason: "pump service",
		}); err != nil {
			t.Fatalf("grant for %s: %v", subject, err)
		}
	}
	brokertest.WaitFor(t, 5*time.Second, "vendor_grant_created alert", func() bool { return len(sink.of(alerts.VendorGrantCreated)) > 0 })
	if got := sink.of(alerts.VendorGrantCreated); len(got) != 1 || got[0].Details["subject"] != "tech@vendor.example" || got[0].Details["by"] != "admin@example.com" {
		t.Errorf("vendor_grant_created: got %+v, want one for tech@vendor.example by admin@example.com", got)
	}

	c := e.StartConnector(s, map[string]string{"echo": brokertest.EchoServer(t)}, func(c *connector.Config) { c.Keepalive = 2 * time.Second })
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-9") })
	if got := sink.of(alerts.DeviceOffline); len(got) != 0 {
		t.Errorf("device_offline while online: %+v", got)
	}
	c.Stop()
	brokertest.WaitFor(t, 30*time.Second, "device_offline alert", func() bool { return len(sink.of(alerts.DeviceOffline)) > 0 })
	time.Sleep(time.Second) // several thresholds: still one alert for the episode
	got := sink.of(alerts.DeviceOffline)
	if len(got) != 1 || got[0].Device != "pump-9" || got[0].Details["threshold"] != "300ms" {
		t.Errorf("device_offline: got %+v, want one for pump-9", got)
	}
}

// TestAlertSensitiveSession: a session on a device carrying a sensitive
// label raises sensitive_session_started.
func TestAlertSensitiveSession(t *testing.T) {
	n, sink := newAlerts(t)
	e := brokertest.New(t)
	ctx := context.Background()
	tok, _, err := e.DB.CreateEnrollmentToken(ctx, "valve-2", map[string]string{"sensitive": "true", "site": "north"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: e.URL, Token: tok, StateDir: t.TempDir() + "/state"})
	if err != nil {
		t.Fatal(err)
	}
	e.StartConnector(s, map[string]string{"echo": brokertest.EchoServer(t)}, nil)
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("valve-2") })
	u, _ := engineerGranted(t, e, "valve-2", "echo")
	m := e.StartSessions(broker.SessionsConfig{Alerts: n, SensitiveLabels: map[string]string{"sensitive": "true"}})

	ls, err := m.Open(ctx, &fieldpass.Caller{User: u}, "valve-2", "echo", "127.0.0.1")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer ls.End(fieldpass.EndClientClosed)
	brokertest.WaitFor(t, 5*time.Second, "sensitive_session_started alert", func() bool { return len(sink.of(alerts.SensitiveSessionStarted)) > 0 })
	a := sink.of(alerts.SensitiveSessionStarted)[0]
	labels, _ := a.Details["labels"].(map[string]any)
	if a.Device != "valve-2" || a.Details["user"] != engineer || a.Details["service"] != "echo" || labels["sensitive"] != "true" || labels["site"] != nil {
		t.Errorf("sensitive_session_started: got %+v", a)
	}
}

// TestAlertOfflineAtStart: a device last seen long ago and not back when
// the broker starts is alerted once, a threshold after the start; a
// disabled one and one never seen are not. A restart does not alert again
// an episode that the broker which saw it begin outlived by the threshold.
func TestAlertOfflineAtStart(t *testing.T) {
	n, sink := newAlerts(t)
	e := brokertest.New(t, brokertest.WithBrokerConfig(func(c *broker.Config) { c.Alerts, c.OfflineAlertAfter = n, 300*time.Millisecond }))
	ctx := context.Background()
	ids := map[string]string{}
	for _, name := range []string{"pump-1", "valve-2", "new-3", "tank-4"} {
		ids[name] = e.Enroll(name).DeviceID
	}
	seen := func(name string, at time.Time) {
		t.Helper()
		if err := e.DB.UpdatePresence(ctx, ids[name], fieldpass.Presence{LastSeen: at, BrokerID: "test-broker"}); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-2 * time.Hour).UTC().Truncate(time.Second)
	seen("pump-1", long)
	seen("valve-2", long)
	if _, err := e.DB.SetDeviceState(ctx, "valve-2", fieldpass.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	offlineAlerts := func() map[string]int {
		got := map[string]int{}
		for _, a := range sink.of(alerts.DeviceOffline) {
			got[a.Device]++
		}
		return got
	}

	e.Stop()
	e.Start()
	brokertest.WaitFor(t, 5*time.Second, "device_offline alert", func() bool { return len(sink.of(alerts.DeviceOffline)) > 0 })
	time.Sleep(time.Second) // several thresholds: still one alert, and none for the others
	if got := offlineAlerts(); len(got) != 1 || got["pump-1"] != 1 {
		t.Fatalf("device_offline after start: got %v, want one for pump-1", got)
	}
	a := sink.of(alerts.DeviceOffline)[0]
	if a.Details["offline_since"] != long.Format(time.RFC3339) || a.Details["reason"] != "offline when the broker started" {
		t.Errorf("device_offline details: got %v, want offline_since %s", a.Details, long.Format(time.RFC3339))
	}

	// pump-1's episode began with an offline event (silent) recorded by
	// test-broker, which went on seeing tank-4 for an hour after: that
	// broker alerted it. tank-4, gone since, is alerted now.
	if err := e.DB.RecordDeviceEvent(ctx, fieldpass.DeviceEvent{
		DeviceID: ids["pump-1"], At: long, Kind: fieldpass.DeviceOffline, BrokerID: "test-broker", Details: map[string]any{"reason": "silent"},
	}); err != nil {
		t.Fatal(err)
	}
	seen("tank-4", long.Add(time.Hour))
	e.Stop()
	e.Start()
	brokertest.WaitFor(t, 5*time.Second, "device_offline alert for tank-4", func() bool { return offlineAlerts()["tank-4"] > 0 })
	time.Sleep(time.Second)
	if got := offlineAlerts(); len(got) != 2 || got["pump-1"] != 1 || got["tank-4"] != 1 {
		t.Errorf("device_offline after a second start: got %v, want pump-1 once (before) and tank-4 once", got)
	}
}
