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
)

// TestConnectNeedsMFAForLabelledDevices: a device labelled as sensitive is
// refused to a login without a multi-factor assertion (an automation token
// here), before any session is opened; other devices are not: the request
// reaches the broker, which finds that (offline) device unreachable.
func TestConnectNeedsMFAForLabelledDevices(t *testing.T) {
	ctx := context.Background()
	env := brokertest.New(t, brokertest.WithAPIConfig(func(env *brokertest.Env, cfg *apiserver.Config) {
		m, err := broker.NewSessions(ctx, env.Broker, env.DB, broker.SessionsConfig{Logger: brokertest.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { m.Run(mctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		cfg.Sessions, cfg.MFALabels = m, map[string]string{"zone": "critical"}
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
	token, _, err := db.IssueToken(ctx, op, eng, fieldpass.TokenAutomation, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := httpapi.NewClient(env.URL, token)

	_, err = c.Connect(ctx, "substation-1", "ssh")
	if fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN || !strings.Contains(err.Error(), "multi-factor") {
		t.Fatalf("labelled device: err %v, want forbidden naming multi-factor", err)
	}
	_, err = c.Connect(ctx, "kiosk-1", "ssh")
	if fieldpass.ErrorCode(err) != fieldpass.EUNAVAILABLE || !strings.Contains(err.Error(), "offline") {
		t.Fatalf("unlabelled device: err %v, want the broker reached (device offline)", err)
	}
	if ss, err := db.Sessions(ctx, fieldpass.SessionFilter{}); err != nil || len(ss) != 0 {
		t.Fatalf("sessions %v, %v: want none opened", ss, err)
	}
}
