package access_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// Approvers learn of a new access request from the webhook, and of its
// decision, through a real Notifier to a receiver that checks each
// signature (issue 11: they learned only by polling).
func TestRequestAlerts(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	person := func(email string, roles ...fieldpass.Role) *fieldpass.Caller {
		t.Helper()
		u, err := db.EnsureUser(ctx, "operator:test", email, roles)
		if err != nil {
			t.Fatal(err)
		}
		return &fieldpass.Caller{User: u}
	}
	eng := person("eng@example.com", fieldpass.RoleEngineer)
	approver := person("approver@example.com", fieldpass.RoleApprover)

	secret := []byte("0123456789abcdef-request-alerts")
	got := make(chan alerts.Alert, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || !alerts.Verify(secret, body, r.Header.Get("X-Fieldpass-Signature")) {
			t.Errorf("delivery with a bad signature %q (%v): %s", r.Header.Get("X-Fieldpass-Signature"), err, body)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var a alerts.Alert
		if err := json.Unmarshal(body, &a); err != nil {
			t.Errorf("delivery body: %v: %s", err, body)
		}
		if r.Header.Get("X-Fieldpass-Delivery") != a.ID {
			t.Errorf("delivery header %q, body id %q", r.Header.Get("X-Fieldpass-Delivery"), a.ID)
		}
		w.WriteHeader(http.StatusNoContent)
		got <- a
	}))
	t.Cleanup(hook.Close)
	n, err := alerts.New(alerts.Config{URL: hook.URL, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); n.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	next := func(kind alerts.Kind) alerts.Alert {
		t.Helper()
		select {
		case a := <-got:
			if a.Kind != kind {
				t.Fatalf("alert %s, want %s: %+v", a.Kind, kind, a)
			}
			return a
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s alert within 10s", kind)
		}
		return alerts.Alert{}
	}

	rules := access.New(access.Config{DB: db, Alerts: n})
	req, err := rules.CreateRequest(ctx, eng, fieldpass.AccessRequest{Device: "pump-7", Service: "ssh",
		Duration: 48 * time.Hour, Reason: "replace the pump", Ticket: "OPS-9"})
	if err != nil {
		t.Fatal(err)
	}
	a := next(alerts.AccessRequested)
	want := map[string]any{"request": req.ID, "requester": "eng@example.com", "service": "ssh", "duration": "2d",
		"reason": "replace the pump", "ticket": "OPS-9"}
	for k, v := range want {
		if a.Details[k] != v {
			t.Errorf("access_requested %s: got %v, want %v", k, a.Details[k], v)
		}
	}
	if a.Device != "pump-7" || a.Details["decide"] != "fieldpass request approve|deny "+req.ID+" [--reason R], or the portal's Approvals page" {
		t.Errorf("access_requested: device %q, decide %v", a.Device, a.Details["decide"])
	}

	if _, _, err := rules.DecideRequest(ctx, approver, req.ID, false, "not this week"); err != nil {
		t.Fatal(err)
	}
	a = next(alerts.AccessRequestDecided)
	want = map[string]any{"request": req.ID, "requester": "eng@example.com", "status": "denied",
		"by": "approver@example.com", "comment": "not this week"}
	for k, v := range want {
		if a.Details[k] != v {
			t.Errorf("access_request_decided %s: got %v, want %v", k, a.Details[k], v)
		}
	}
}
