package apiserver_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/portal"
)

// TestConnectPassesPortalMFA: the connect handler hands the session
// manager what the portal knows of the caller's login. The rule itself
// (MFALabels) is the broker's and tested there; here, over HTTP, on a
// device labelled zone=critical: an automation token (never MFA) is refused
// naming multi-factor, while a token whose login the portal has on record
// as MFA-asserted gets past that rule to the next (the device is offline);
// an unlabelled device needs no MFA. No session is opened.
func TestConnectPassesPortalMFA(t *testing.T) {
	ctx := context.Background()
	env := brokertest.New(t, brokertest.WithAPIConfig(func(env *brokertest.Env, cfg *apiserver.Config) {
		cfg.Sessions = env.StartSessions(broker.SessionsConfig{MFALabels: map[string]string{"zone": "critical"}})
	}))
	db := env.DB
	prefix := netip.MustParsePrefix("10.77.0.0/16")
	for name, labels := range map[string]map[string]string{"substation-1": {"zone": "critical"}, "kiosk-1": {"zone": "public"}} {
		tok, _, err := db.CreateEnrollmentToken(ctx, name, labels, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		key := mustKey(t).Public().String()
		if _, err := db.Enroll(ctx, tok, key, "test", func(seq int64) (netip.Addr, error) { return fieldpass.TunnelAddress(prefix, seq) }); err != nil {
			t.Fatal(err)
		}
	}
	const op, eng = "operator:test", "eng@example.com"
	if _, err := db.EnsureUser(ctx, op, eng, []fieldpass.Role{fieldpass.RoleEngineer}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateGrant(ctx, op, fieldpass.Grant{Subject: eng, Devices: []string{"substation-1", "kiosk-1"}, Services: []string{"ssh"},
		Start: time.Now().Add(-time.Minute), End: time.Now().Add(time.Hour), Reason: "work"}, fieldpass.HardMaxGrantDuration); err != nil {
		t.Fatal(err)
	}
	auto, _, err := db.IssueToken(ctx, op, eng, fieldpass.TokenAutomation, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A CLI token and its login's user.login event, as the portal records
	// an MFA login (on this broker or another): the durable record the
	// portal reads back when it has no memory of the token.
	cli, ct, err := db.IssueToken(ctx, op, eng, fieldpass.TokenCLI, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.AppendAudit(ctx, fieldpass.AuditEvent{Actor: fieldpass.UserActor(eng), Action: portal.AuditUserLogin, Target: fieldpass.UserTarget(eng),
		Details: map[string]any{"token_id": ct.ID, "kind": string(ct.Kind), "mfa": true, "method": "device"}}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, token, device, code, msg string
	}{
		{"automation token, labelled device", auto, "substation-1", fieldpass.EFORBIDDEN, "multi-factor"},
		{"MFA login, labelled device", cli, "substation-1", fieldpass.EUNAVAILABLE, "offline"},
		{"automation token, unlabelled device", auto, "kiosk-1", fieldpass.EUNAVAILABLE, "offline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := httpapi.NewClient(env.URL, tc.token).Connect(ctx, tc.device, "ssh")
			if fieldpass.ErrorCode(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %v, want %s naming %q", err, tc.code, tc.msg)
			}
		})
	}
	if ss, err := db.Sessions(ctx, fieldpass.SessionFilter{}); err != nil || len(ss) != 0 {
		t.Fatalf("sessions %v, %v: want none opened", ss, err)
	}
}
