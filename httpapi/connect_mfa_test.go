package httpapi_test

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// refusingSessions stands in for the broker: reaching it means the MFA gate
// let the caller through.
type refusingSessions struct{ opened int }

func (r *refusingSessions) Open(context.Context, *fieldpass.User, string, string, string) (httpapi.LiveSession, error) {
	r.opened++
	return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "stand-in broker reached")
}
func (r *refusingSessions) EndSession(string, fieldpass.EndReason) bool { return false }

// TestConnectNeedsMFAForLabelledDevices: a device labelled as sensitive is
// refused to a login without a multi-factor assertion (a CLI or automation
// token here), before any session is opened; other devices are not.
func TestConnectNeedsMFAForLabelledDevices(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
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
	token, _, err := db.IssueToken(ctx, op, eng, fieldpass.TokenAutomation, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stand := &refusingSessions{}
	api := httpapi.New(httpapi.Config{DB: db, Sessions: stand, MFALabels: map[string]string{"zone": "critical"}})
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	c := httpapi.NewClient(srv.URL, token)

	_, err = c.Connect(ctx, "substation-1", "ssh")
	if fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN || !strings.Contains(err.Error(), "multi-factor") {
		t.Fatalf("labelled device: err %v, want forbidden naming multi-factor", err)
	}
	if stand.opened != 0 {
		t.Fatal("a session was opened for a login without MFA")
	}
	_, err = c.Connect(ctx, "kiosk-1", "ssh")
	if !strings.Contains(err.Error(), "stand-in broker reached") || stand.opened != 1 {
		t.Fatalf("unlabelled device: err %v (opened %d), want the broker reached", err, stand.opened)
	}
}
