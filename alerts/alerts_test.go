package alerts_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var secret = []byte("0123456789abcdef-test-secret")

// receiver is a webhook that checks signatures and answers with the
// statuses in script, then 204.
type receiver struct {
	t      *testing.T
	mu     sync.Mutex
	script []int
	got    []delivery
	ch     chan delivery
}

type delivery struct {
	id     string
	alert  alerts.Alert
	status int
}

func newReceiver(t *testing.T, script ...int) (*receiver, *httptest.Server) {
	r := &receiver{t: t, script: script, ch: make(chan delivery, 100)}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		r.t.Errorf("got %s with Content-Type %q, want POST application/json", req.Method, req.Header.Get("Content-Type"))
	}
	if !alerts.Verify(secret, body, req.Header.Get("X-Fieldpass-Signature")) {
		r.t.Errorf("bad signature %q for body %s", req.Header.Get("X-Fieldpass-Signature"), body)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var a alerts.Alert
	if err := json.Unmarshal(body, &a); err != nil {
		r.t.Errorf("body %s: %v", body, err)
	}
	r.mu.Lock()
	status := http.StatusNoContent
	if len(r.script) > 0 {
		status, r.script = r.script[0], r.script[1:]
	}
	d := delivery{id: req.Header.Get("X-Fieldpass-Delivery"), alert: a, status: status}
	r.got = append(r.got, d)
	r.mu.Unlock()
	w.WriteHeader(status)
	r.ch <- d
}

func (r *receiver) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-r.ch:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
		return delivery{}
	}
}

// mustRun starts n and stops it when t ends.
func mustRun(t *testing.T, n *alerts.Notifier) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func mustNew(t *testing.T, cfg alerts.Config) *alerts.Notifier {
	t.Helper()
	n, err := alerts.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return n
}

func TestDeliverSigned(t *testing.T) {
	r, srv := newReceiver(t)
	n := mustNew(t, alerts.Config{URL: srv.URL, Secret: secret})
	mustRun(t, n)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	n.Notify(alerts.Alert{Kind: alerts.DeviceEnrolled, At: at, Device: "pump-7", Details: map[string]any{"address": "10.77.0.2"}})
	d := r.next(t)
	if d.id == "" || d.id != d.alert.ID {
		t.Errorf("X-Fieldpass-Delivery %q, alert id %q: want equal, non-empty", d.id, d.alert.ID)
	}
	if d.alert.Kind != alerts.DeviceEnrolled || d.alert.Device != "pump-7" || !d.alert.At.Equal(at) || d.alert.Details["address"] != "10.77.0.2" {
		t.Errorf("got %+v", d.alert)
	}
}

func TestRetryThenSuccess(t *testing.T) {
	r, srv := newReceiver(t, 500, 503)
	n := mustNew(t, alerts.Config{URL: srv.URL, Secret: secret, MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
	mustRun(t, n)
	n.Notify(alerts.Alert{Kind: alerts.EndpointChanged, Device: "pump-7"})
	var ids []string
	for _, want := range []int{500, 503, 204} {
		d := r.next(t)
		if d.status != want {
			t.Fatalf("got status %d, want %d", d.status, want)
		}
		ids = append(ids, d.id)
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Errorf("delivery ids %v: want the same on every retry", ids)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.Delivered() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n.Delivered() != 1 || n.DeadLettered() != 0 {
		t.Errorf("delivered %d, dead %d: want 1, 0", n.Delivered(), n.DeadLettered())
	}
}

func TestDeadLetter(t *testing.T) {
	r, srv := newReceiver(t, 500, 500, 500, 500, 500)
	url := pgtest.NewDatabase(t)
	db, err := postgres.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	n := mustNew(t, alerts.Config{
		URL: srv.URL, Secret: secret, DeadLetters: db,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond, MaxAttempts: 3,
	})
	mustRun(t, n)
	n.Notify(alerts.Alert{Kind: alerts.VendorGrantCreated, Details: map[string]any{"subject": "tech@vendor.example"}})
	var id string
	for range 3 {
		id = r.next(t).id
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.DeadLettered() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var (
		kind, lastErr, subject string
		attempts               int
	)
	err = conn.QueryRow(t.Context(), `SELECT kind, attempts, last_error, payload->'details'->>'subject' FROM alert_dead_letters WHERE id = $1`, id).
		Scan(&kind, &attempts, &lastErr, &subject)
	if err != nil {
		t.Fatalf("dead letter %s: %v", id, err)
	}
	if kind != string(alerts.VendorGrantCreated) || attempts != 3 || lastErr != "webhook answered 500 Internal Server Error" || subject != "tech@vendor.example" {
		t.Errorf("got %s, %d, %q, %q", kind, attempts, lastErr, subject)
	}
	select {
	case d := <-r.ch:
		t.Errorf("delivery after giving up: %+v", d)
	case <-time.After(50 * time.Millisecond):
	}
}

// A full queue drops alerts at once instead of blocking the caller.
func TestQueueFullDrops(t *testing.T) {
	_, srv := newReceiver(t)
	n := mustNew(t, alerts.Config{URL: srv.URL, Secret: secret, QueueSize: 2})
	// Not running: nothing drains the queue.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5 {
			n.Notify(alerts.Alert{Kind: alerts.DeviceOffline})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Notify blocked")
	}
	if got := n.Dropped(); got != 3 {
		t.Errorf("dropped %d, want 3", got)
	}
	var nilN *alerts.Notifier
	nilN.Notify(alerts.Alert{Kind: alerts.DeviceOffline}) // alerts off: no panic
}

func TestCheckURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://hooks.example.com/fieldpass", true},
		{"http://127.0.0.1:9000/hook", true},
		{"http://[::1]:9000/hook", true},
		{"http://localhost/hook", true},
		{"http://hooks.example.com/fieldpass", false},
		{"http://10.0.0.1/hook", false},
		{"ftp://hooks.example.com/", false},
		{"hooks.example.com", false},
	} {
		t.Run(tc.url, func(t *testing.T) {
			if err := alerts.CheckURL(tc.url); (err == nil) != tc.ok {
				t.Errorf("got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
