package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector/httpsenroll"
)

// TestOpenNeedsMFAForLabelledDevices: with MFALabels zone=critical, a
// connected device carrying that label is refused (mfa_required) to a
// caller whose login asserted no multi-factor, before any session row is
// written; the same caller with MFA gets a session that carries bytes; a
// device without the label is reached without MFA.
func TestOpenNeedsMFAForLabelledDevices(t *testing.T) {
	e := brokertest.New(t)
	ctx := context.Background()
	echo := brokertest.NewEcho(t)
	for name, labels := range map[string]map[string]string{
		"substation-1": {"zone": "critical", "site": "north"},
		"kiosk-1":      {"zone": "public"},
	} {
		tok, _, err := e.DB.CreateEnrollmentToken(ctx, name, labels, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		s, err := httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: e.URL, Token: tok, StateDir: t.TempDir() + "/state"})
		if err != nil {
			t.Fatal(err)
		}
		e.StartConnector(s, map[string]string{"echo": echo.Addr}, nil)
	}
	brokertest.WaitFor(t, 20*time.Second, "connectors online", func() bool {
		return e.Broker.Connected("substation-1") && e.Broker.Connected("kiosk-1")
	})
	u, err := e.DB.EnsureUser(ctx, testOperator, engineer, []fieldpass.Role{fieldpass.RoleEngineer})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.DB.CreateGrant(ctx, testOperator, fieldpass.Grant{
		Subject: engineer, Devices: []string{"substation-1", "kiosk-1"}, Services: []string{"echo"}, End: time.Now().Add(time.Hour), Reason: "test",
	}, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	m := e.StartSessions(broker.SessionsConfig{MFALabels: map[string]string{"zone": "critical"}})

	noMFA := &fieldpass.Caller{User: u}
	_, err = m.Open(ctx, noMFA, "substation-1", "echo", "127.0.0.1")
	if fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN || !strings.Contains(err.Error(), "multi-factor") || !strings.Contains(err.Error(), "zone=critical") {
		t.Fatalf("labelled device without MFA: err %v, want forbidden naming multi-factor and the label", err)
	}
	if r := fieldpass.DenyReasonOf(err); r != fieldpass.DenyMFARequired {
		t.Fatalf("labelled device without MFA: reason %q, want %q", r, fieldpass.DenyMFARequired)
	}
	if rs, err := e.DB.Sessions(ctx, fieldpass.SessionFilter{}); err != nil || len(rs) != 0 {
		t.Fatalf("after the refusal: sessions %v, %v; want none written", rs, err)
	}
	if n := echo.Accepted(); n != 0 {
		t.Fatalf("after the refusal: the service saw %d connections, want 0", n)
	}

	for _, tc := range []struct {
		name, device string
		caller       *fieldpass.Caller
	}{
		{"labelled device with MFA", "substation-1", &fieldpass.Caller{User: u, MFA: true}},
		{"unlabelled device without MFA", "kiosk-1", noMFA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := m.Open(ctx, tc.caller, tc.device, "echo", "127.0.0.1")
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.End(fieldpass.EndClientClosed)
			st, err := s.Stream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			roundTrip(t, st, 100)
			if r := s.Record(); r.Device != tc.device || r.User != engineer {
				t.Fatalf("record: %+v", r)
			}
		})
	}
}
