package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
)

func (se *sessionEnv) denials() []fieldpass.AuditEvent {
	se.tb.Helper()
	es, err := se.DB.AuditEvents(context.Background(), fieldpass.AuditFilter{Action: broker.AuditSessionDenied})
	if err != nil {
		se.tb.Fatal(err)
	}
	return es
}

// Every refused connect is on the record: who, which device and service,
// why, from where; identical ones within a window as one event with a count.
func TestDeniedConnectsAudited(t *testing.T) {
	se := newSessionEnv(t, func(c *broker.SessionsConfig) { c.DenialWindow = 300 * time.Millisecond })
	ctx := context.Background()
	for range 5 {
		if _, err := se.m.Open(ctx, &fieldpass.Caller{User: se.user}, "pump-1", "echo", "192.0.2.7:5555"); fieldpass.DenyReasonOf(err) != fieldpass.DenyNoGrant {
			t.Fatalf("open without a grant: %v", err)
		}
	}
	if _, err := se.m.Open(ctx, &fieldpass.Caller{User: se.user}, "pump-9", "ssh", "192.0.2.7:5555"); fieldpass.DenyReasonOf(err) != fieldpass.DenyDeviceUnknown {
		t.Fatalf("open of an unknown device: %v", err)
	}
	var es []fieldpass.AuditEvent
	brokertest.WaitFor(t, 5*time.Second, "three session.denied events", func() bool {
		es = se.denials()
		return len(es) >= 3
	})
	first := map[string]fieldpass.AuditEvent{}
	var repeats *fieldpass.AuditEvent
	for _, e := range es {
		if _, ok := e.Details["repeats"]; ok {
			repeats = &e
			continue
		}
		first[e.Details["reason"].(string)] = e
	}
	e, ok := first["no_grant"]
	if !ok {
		t.Fatalf("no session.denied event for no_grant in %+v", es)
	}
	if e.Actor != "user:"+engineer || e.Target != "device:pump-1" || e.Details["user"] != engineer ||
		e.Details["device"] != "pump-1" || e.Details["service"] != "echo" || e.Details["client"] != "192.0.2.7:5555" {
		t.Errorf("no_grant event: actor %q target %q details %v", e.Actor, e.Target, e.Details)
	}
	if e, ok := first["device_unknown"]; !ok || e.Details["device"] != "pump-9" {
		t.Errorf("device_unknown event: %+v (all: %+v)", e, es)
	}
	if repeats == nil || repeats.Details["repeats"] != float64(4) || repeats.Details["reason"] != "no_grant" {
		t.Fatalf("want one event counting the 4 repeated no_grant refusals, got %+v", es)
	}
}

// A flood of distinct refusals writes a bounded number of events.
func TestDeniedConnectsBounded(t *testing.T) {
	se := newSessionEnv(t, func(c *broker.SessionsConfig) {
		c.DenialWindow = time.Hour
		c.DenialLimit = 10
	})
	ctx := context.Background()
	for i := range 200 {
		se.m.Open(ctx, &fieldpass.Caller{User: se.user}, "pump-1", fmt.Sprintf("svc%d", i), "192.0.2.7:5555")
	}
	brokertest.WaitFor(t, 5*time.Second, "ten session.denied events", func() bool { return len(se.denials()) >= 10 })
	se.stopM() // writes the window's overflow
	es := se.denials()
	if len(es) != 11 {
		t.Fatalf("200 distinct refusals wrote %d events, want 10 and one counting the other 190", len(es))
	}
	if last := es[len(es)-1]; last.Details["repeats"] != float64(190) || last.Actor != "broker:test-broker" {
		t.Fatalf("overflow event: %+v", last)
	}
}

// Refused person-facing operations are on the record too: a missing role,
// a decision on one's own request.
func TestDeniedOperationsAudited(t *testing.T) {
	se := newSessionEnv(t, nil)
	ctx := context.Background()
	rules := access.New(access.Config{DB: se.DB, Sessions: se.m})
	eng := &fieldpass.Caller{User: se.user}
	_, err := rules.CreateGrant(ctx, eng, fieldpass.Grant{Subject: engineer, Devices: []string{"pump-1"},
		Services: []string{"echo"}, End: time.Now().Add(time.Hour), Reason: "me"})
	if fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN {
		t.Fatalf("engineer creating a grant: %v", err)
	}
	appr, err := se.DB.EnsureUser(ctx, testOperator, "appr@example.com", []fieldpass.Role{fieldpass.RoleApprover})
	if err != nil {
		t.Fatal(err)
	}
	ac := &fieldpass.Caller{User: appr}
	req, err := rules.CreateRequest(ctx, ac, fieldpass.AccessRequest{Device: "pump-1", Service: "echo", Duration: time.Hour, Reason: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rules.DecideRequest(ctx, ac, req.ID, true, ""); fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN {
		t.Fatalf("approving one's own request: %v", err)
	}
	var es []fieldpass.AuditEvent
	brokertest.WaitFor(t, 5*time.Second, "two session.denied events", func() bool {
		es = se.denials()
		return len(es) >= 2
	})
	byOp := map[string]fieldpass.AuditEvent{}
	for _, e := range es {
		byOp[fmt.Sprint(e.Details["operation"])] = e
	}
	if e := byOp[fieldpass.AuditGrantCreate]; e.Actor != "user:"+engineer || e.Details["reason"] != "role_required" {
		t.Errorf("refused grant.create: %+v (all: %+v)", e, es)
	}
	if e := byOp[fieldpass.AuditRequestApprove]; e.Actor != "user:appr@example.com" || e.Target != "request:"+req.ID || e.Details["reason"] != "self_approval" {
		t.Errorf("refused self-approval: %+v (all: %+v)", e, es)
	}
}
