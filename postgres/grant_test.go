package postgres_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

const week = 7 * 24 * time.Hour

func (s *store) mustGrant(tb testing.TB, g fieldpass.Grant) *fieldpass.Grant {
	tb.Helper()
	if g.Reason == "" {
		g.Reason = "maintenance"
	}
	if g.End.IsZero() {
		g.End = s.clock.Now().Add(time.Hour)
	}
	out, err := s.CreateGrant(context.Background(), operator, g, week)
	if err != nil {
		tb.Fatalf("CreateGrant: %v", err)
	}
	return out
}

func (s *store) mustLabelled(tb testing.TB, name string, keyN int, labels map[string]string) *fieldpass.Device {
	tb.Helper()
	dev, err := s.Enroll(context.Background(), s.mustToken(tb, name, labels), key(keyN), "v1.0.0", addr)
	if err != nil {
		tb.Fatalf("Enroll(%s): %v", name, err)
	}
	return dev
}

func TestCreateGrant(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	now := s.clock.Now()

	g, err := s.CreateGrant(ctx, operator, fieldpass.Grant{
		Subject: "Vendor@Acme.example", Devices: []string{"pump-7", "pump-2", "pump-7"}, Services: []string{"ssh", "web"},
		End: now.Add(2 * time.Hour), Reason: "firmware update", Ticket: "CHG-42",
	}, week)
	if err != nil {
		t.Fatal(err)
	}
	if g.Subject != "vendor@acme.example" || len(g.Devices) != 2 || g.Devices[0] != "pump-2" || !g.Start.Equal(now) ||
		g.CreatedBy != operator || g.Ticket != "CHG-42" || g.Selector != nil || g.Revoked() {
		t.Errorf("grant: got %+v", g)
	}
	back, err := s.Grant(ctx, g.ID)
	if err != nil || back.ID != g.ID || !back.End.Equal(g.End) || len(back.Services) != 2 {
		t.Errorf("Grant: got %+v, %v", back, err)
	}
	wantActions(t, s, fieldpass.AuditGrantCreate)

	base := fieldpass.Grant{Subject: "a@example.com", Devices: []string{"pump-7"}, Services: []string{"ssh"},
		Start: now, End: now.Add(time.Hour), Reason: "why"}
	for _, tc := range []struct {
		name   string
		change func(g *fieldpass.Grant)
		max    time.Duration
		msg    string
	}{
		{"no end", func(g *fieldpass.Grant) { g.End = time.Time{} }, week, "every grant ends"},
		{"end before start", func(g *fieldpass.Grant) { g.End = g.Start.Add(-time.Second) }, week, "before it starts"},
		{"end at start", func(g *fieldpass.Grant) { g.End = g.Start }, week, "before it starts"},
		{"over the maximum", func(g *fieldpass.Grant) { g.End = g.Start.Add(week + time.Second) }, week, "longer than"},
		{"no maximum", func(g *fieldpass.Grant) {}, 0, "maximum"},
		{"already ended", func(g *fieldpass.Grant) { g.Start, g.End = now.Add(-2*time.Hour), now }, week, "has passed"},
		{"devices and selector", func(g *fieldpass.Grant) { g.Selector = map[string]string{"site": "north"} }, week, "not both"},
		{"neither", func(g *fieldpass.Grant) { g.Devices = nil }, week, "devices"},
		{"bad device", func(g *fieldpass.Grant) { g.Devices = []string{"Pump 7"} }, week, "device name"},
		{"bad selector", func(g *fieldpass.Grant) { g.Devices, g.Selector = nil, map[string]string{"Site!": "x"} }, week, "selector"},
		{"no services", func(g *fieldpass.Grant) { g.Services = nil }, week, "service"},
		{"bad service", func(g *fieldpass.Grant) { g.Services = []string{"SSH"} }, week, "service name"},
		{"no reason", func(g *fieldpass.Grant) { g.Reason = "" }, week, "reason"},
		{"bad subject", func(g *fieldpass.Grant) { g.Subject = "vendor" }, week, "subject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := base
			g.Devices = append([]string(nil), base.Devices...)
			tc.change(&g)
			_, err := s.CreateGrant(ctx, operator, g, tc.max)
			wantError(t, err, fieldpass.EINVALID, tc.msg)
		})
	}
	if _, err := s.CreateGrant(ctx, "", base, week); fieldpass.ErrorCode(err) != fieldpass.EINVALID {
		t.Errorf("no actor: got %v", err)
	}
	if n := s.count(t, `SELECT count(*) FROM grants`); n != 1 {
		t.Errorf("grants stored: got %d, want 1", n)
	}
	// The database itself refuses a grant that does not end after it starts.
	_, err = s.sql.Exec(ctx, `INSERT INTO grants (subject, devices, services, starts_at, ends_at, reason, created_by, created_at)
		VALUES ('a@example.com', '{x}', '{ssh}', now(), now(), 'r', 'me', now())`)
	if err == nil {
		t.Error("the database accepted ends_at = starts_at")
	}
	// And any change to a grant beyond revoking it.
	if _, err := s.sql.Exec(ctx, `UPDATE grants SET ends_at = ends_at + interval '1 year'`); err == nil {
		t.Error("the database let a grant be extended")
	}
	if _, err := s.sql.Exec(ctx, `DELETE FROM grants`); err == nil {
		t.Error("the database let a grant be deleted")
	}
}

func TestActiveGrantFor(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	now := s.clock.Now()
	north := s.mustLabelled(t, "pump-1", 1, map[string]string{"site": "north", "kind": "pump"})
	s.mustLabelled(t, "pump-2", 2, map[string]string{"site": "south", "kind": "pump"})
	s.mustLabelled(t, "cam-1", 3, map[string]string{"site": "north", "kind": "camera"})
	s.mustUser(t, "eng@example.com", fieldpass.RoleEngineer)

	byName := s.mustGrant(t, fieldpass.Grant{Subject: "eng@example.com", Devices: []string{"pump-2"}, Services: []string{"ssh"},
		Start: now.Add(time.Hour), End: now.Add(2 * time.Hour)})
	bySelector := s.mustGrant(t, fieldpass.Grant{Subject: "eng@example.com", Selector: map[string]string{"site": "north", "kind": "pump"},
		Services: []string{"ssh", "web"}, End: now.Add(time.Hour)})
	s.mustGrant(t, fieldpass.Grant{Subject: "vendor@acme.example", Selector: map[string]string{"site": "north"}, Services: []string{"web"}})

	for _, tc := range []struct {
		name, email, device, service string
		at                           time.Time
		want                         string // grant id, or "" for forbidden
	}{
		{"selector matches", "eng@example.com", "pump-1", "ssh", now, bySelector.ID},
		{"selector, other service", "eng@example.com", "pump-1", "web", now, bySelector.ID},
		{"selector, partial label match", "eng@example.com", "cam-1", "ssh", now, ""},
		{"service not granted", "eng@example.com", "pump-1", "vnc", now, ""},
		{"before start", "eng@example.com", "pump-2", "ssh", now.Add(time.Hour - time.Microsecond), ""},
		{"at start", "eng@example.com", "pump-2", "ssh", now.Add(time.Hour), byName.ID},
		{"just before end", "eng@example.com", "pump-2", "ssh", now.Add(2*time.Hour - time.Microsecond), byName.ID},
		{"at end", "eng@example.com", "pump-2", "ssh", now.Add(2 * time.Hour), ""},
		{"other subject", "other@example.com", "pump-1", "ssh", now, ""},
		{"vendor not yet seen", "Vendor@acme.example", "cam-1", "web", now, "vendor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := s.ActiveGrantFor(ctx, tc.email, tc.device, tc.service, tc.at)
			switch tc.want {
			case "":
				wantError(t, err, fieldpass.EFORBIDDEN, "no active grant")
			case "vendor":
				if err != nil || g.Subject != "vendor@acme.example" {
					t.Errorf("got %+v, %v", g, err)
				}
			default:
				if err != nil || g.ID != tc.want {
					t.Errorf("got %v, %v; want grant %s", g, err, tc.want)
				}
			}
		})
	}
	if !bySelector.Covers(north, "ssh", now) {
		t.Error("Covers disagrees with the store")
	}
	_, err := s.ActiveGrantFor(ctx, "eng@example.com", "nope", "ssh", now)
	wantError(t, err, fieldpass.ENOTFOUND, "not found")
	s.mustSetState(t, "pump-1", fieldpass.DeviceDisabled)
	_, err = s.ActiveGrantFor(ctx, "eng@example.com", "pump-1", "ssh", now)
	wantError(t, err, fieldpass.EFORBIDDEN, "disabled")
	s.mustSetState(t, "pump-1", fieldpass.DeviceActive)
	if _, err := s.SetUserDisabled(ctx, operator, "eng@example.com", true); err != nil {
		t.Fatal(err)
	}
	_, err = s.ActiveGrantFor(ctx, "eng@example.com", "pump-1", "ssh", now)
	wantError(t, err, fieldpass.EFORBIDDEN, "disabled")
	if _, err := s.SetUserDisabled(ctx, operator, "eng@example.com", false); err != nil {
		t.Fatal(err)
	}

	// Revocation takes effect at once.
	s.clock.Add(time.Minute)
	r, err := s.RevokeGrant(ctx, "user:admin@example.com", bySelector.ID)
	if err != nil || r.RevokedBy != "user:admin@example.com" || !r.RevokedAt.Equal(s.clock.Now()) {
		t.Fatalf("RevokeGrant: got %+v, %v", r, err)
	}
	_, err = s.ActiveGrantFor(ctx, "eng@example.com", "pump-1", "ssh", s.clock.Now())
	wantError(t, err, fieldpass.EFORBIDDEN, "no active grant")
	_, err = s.RevokeGrant(ctx, operator, bySelector.ID)
	wantError(t, err, fieldpass.ECONFLICT, "already revoked")
	if r.RevokeReason != "" {
		t.Errorf("revoked without a reason: got reason %q", r.RevokeReason)
	}

	s.clock.Add(3 * time.Hour)
	_, err = s.RevokeGrant(ctx, operator, byName.ID)
	wantError(t, err, fieldpass.ECONFLICT, "already ended")
	_, err = s.RevokeGrant(ctx, operator, "00000000-0000-0000-0000-000000000000")
	wantError(t, err, fieldpass.ENOTFOUND, "not found")

	// Listing.
	for _, tc := range []struct {
		name string
		f    fieldpass.GrantFilter
		want int
	}{
		{"all", fieldpass.GrantFilter{}, 3},
		{"subject", fieldpass.GrantFilter{Subject: "ENG@example.com"}, 2},
		{"device by name", fieldpass.GrantFilter{Device: "pump-2"}, 1},
		{"device by selector", fieldpass.GrantFilter{Device: "cam-1"}, 1},
		{"device by both kinds", fieldpass.GrantFilter{Device: "pump-1"}, 2},
		{"active at start", fieldpass.GrantFilter{ActiveAt: now}, 2},
		{"active after revocation", fieldpass.GrantFilter{ActiveAt: now.Add(90 * time.Minute)}, 1},
		{"limit", fieldpass.GrantFilter{Limit: 1}, 1},
	} {
		t.Run("list "+tc.name, func(t *testing.T) {
			gs, err := s.Grants(ctx, tc.f)
			if err != nil || len(gs) != tc.want {
				t.Errorf("got %d grants, %v; want %d", len(gs), err, tc.want)
			}
		})
	}
}

// TestRevokeGrantReason: why a grant was revoked is kept on the grant and
// in the audit event; never changed afterwards, nor set on a grant not
// revoked.
func TestRevokeGrantReason(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	s.mustEnroll(t, "pump-1", 1)
	s.mustUser(t, "eng@example.com", fieldpass.RoleEngineer)
	why := s.mustGrant(t, fieldpass.Grant{Subject: "eng@example.com", Devices: []string{"pump-1"}, Services: []string{"ssh"}})
	_, err := s.RevokeGrantBecause(ctx, operator, why.ID, "line one\nline two")
	wantError(t, err, fieldpass.EINVALID, "control character")
	if _, err := s.sql.Exec(ctx, `UPDATE grants SET revoke_reason = 'sneaked in' WHERE id = $1::uuid`, why.ID); err == nil {
		t.Error("the database let a reason be set on a grant not revoked")
	}
	r, err := s.RevokeGrantBecause(ctx, operator, why.ID, "contract ended")
	if err != nil || r.RevokeReason != "contract ended" {
		t.Fatalf("RevokeGrantBecause: got %+v, %v", r, err)
	}
	if gs, err := s.Grants(ctx, fieldpass.GrantFilter{Subject: "eng@example.com"}); err != nil || !slices.ContainsFunc(gs, func(g *fieldpass.Grant) bool {
		return g.ID == why.ID && g.RevokeReason == "contract ended"
	}) {
		t.Errorf("Grants: the revoked grant's reason is not listed: %v", err)
	}
	evs, err := s.AuditEvents(ctx, fieldpass.AuditFilter{Action: fieldpass.AuditGrantRevoke, Target: postgres.GrantTarget(why.ID)})
	if err != nil || len(evs) != 1 || evs[0].Details["reason"] != "contract ended" {
		t.Errorf("grant.revoke event: %+v, %v", evs, err)
	}
	if _, err := s.sql.Exec(ctx, `UPDATE grants SET revoke_reason = 'rewritten' WHERE id = $1::uuid`, why.ID); err == nil {
		t.Error("the database let a revocation's reason be rewritten")
	}
}

func TestAccessRequests(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	s.mustEnroll(t, "pump-1", 1)
	s.mustUser(t, "eng@example.com", fieldpass.RoleEngineer)
	s.mustUser(t, "boss@example.com", fieldpass.RoleApprover)

	req := fieldpass.AccessRequest{Requester: "Eng@example.com", Device: "pump-1", Service: "ssh", Duration: 2 * time.Hour, Reason: "alarm 17"}
	r, err := s.CreateRequest(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != fieldpass.RequestPending || r.Requester != "eng@example.com" || r.Duration != 2*time.Hour {
		t.Errorf("request: got %+v", r)
	}
	_, err = s.CreateRequest(ctx, req)
	wantError(t, err, fieldpass.ECONFLICT, "pending request")
	bad := req
	bad.Device = "nope"
	_, err = s.CreateRequest(ctx, bad)
	wantError(t, err, fieldpass.ENOTFOUND, "not found")
	bad = req
	bad.Reason = ""
	_, err = s.CreateRequest(ctx, bad)
	wantError(t, err, fieldpass.EINVALID, "reason")

	// Nobody approves their own request, whatever their roles.
	_, _, err = s.DecideRequest(ctx, "ENG@example.com", r.ID, true, week, "")
	wantError(t, err, fieldpass.EFORBIDDEN, "your own request")
	_, _, err = s.DecideRequest(ctx, "boss@example.com", r.ID, true, time.Hour, "")
	wantError(t, err, fieldpass.EINVALID, "longer than")

	s.clock.Add(time.Minute)
	decided, g, err := s.DecideRequest(ctx, "boss@example.com", r.ID, true, week, "")
	if err != nil {
		t.Fatal(err)
	}
	now := s.clock.Now()
	if decided.Status != fieldpass.RequestApproved || decided.DecidedBy != "boss@example.com" || decided.GrantID != g.ID || !decided.DecidedAt.Equal(now) {
		t.Errorf("decided: got %+v", decided)
	}
	if g.Subject != "eng@example.com" || g.Devices[0] != "pump-1" || g.Services[0] != "ssh" || !g.Start.Equal(now) ||
		!g.End.Equal(now.Add(2*time.Hour)) || g.CreatedBy != "user:boss@example.com" || g.Reason != "alarm 17" {
		t.Errorf("grant from approval: got %+v", g)
	}
	if _, err := s.ActiveGrantFor(ctx, "eng@example.com", "pump-1", "ssh", now); err != nil {
		t.Errorf("approved access: %v", err)
	}
	_, _, err = s.DecideRequest(ctx, "other@example.com", r.ID, false, week, "")
	wantError(t, err, fieldpass.ECONFLICT, "already approved by boss@example.com")

	// Denial creates nothing; the same request may then be asked again.
	r2, err := s.CreateRequest(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	denied, g2, err := s.DecideRequest(ctx, "boss@example.com", r2.ID, false, week, "")
	if err != nil || denied.Status != fieldpass.RequestDenied || g2 != nil || denied.GrantID != "" {
		t.Errorf("deny: got %+v, %v, %v", denied, g2, err)
	}
	wantActions(t, s, fieldpass.AuditUserCreate, fieldpass.AuditUserCreate, fieldpass.AuditRequestCreate,
		fieldpass.AuditGrantCreate, fieldpass.AuditRequestApprove, fieldpass.AuditRequestCreate, fieldpass.AuditRequestDeny)

	for _, tc := range []struct {
		f    fieldpass.RequestFilter
		want int
	}{
		{fieldpass.RequestFilter{}, 2},
		{fieldpass.RequestFilter{Status: fieldpass.RequestPending}, 0},
		{fieldpass.RequestFilter{Status: fieldpass.RequestDenied}, 1},
		{fieldpass.RequestFilter{Requester: "eng@example.com"}, 2},
		{fieldpass.RequestFilter{Requester: "boss@example.com"}, 0},
	} {
		rs, err := s.Requests(ctx, tc.f)
		if err != nil || len(rs) != tc.want {
			t.Errorf("Requests(%+v): got %d, %v; want %d", tc.f, len(rs), err, tc.want)
		}
	}
	// The database refuses self-approval even behind the store's back.
	r3, err := s.CreateRequest(ctx, fieldpass.AccessRequest{Requester: "boss@example.com", Device: "pump-1", Service: "web", Duration: time.Hour, Reason: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.sql.Exec(ctx, `UPDATE access_requests SET status = 'denied', decided_by = requester, decided_at = now() WHERE id = $1`, r3.ID); err == nil {
		t.Error("the database accepted a self-decision")
	}
}

// TestDecideRequestRace: of many approvers deciding one request at once,
// exactly one wins, and exactly one grant exists.
func TestDecideRequestRace(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	s.mustEnroll(t, "pump-1", 1)
	r, err := s.CreateRequest(ctx, fieldpass.AccessRequest{Requester: "eng@example.com", Device: "pump-1", Service: "ssh", Duration: time.Hour, Reason: "r"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.DecideRequest(ctx, "approver"+string(rune('a'+i))+"@example.com", r.ID, i%2 == 0, week, "")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	wins := 0
	for err := range errs {
		switch fieldpass.ErrorCode(err) {
		case "":
			wins++
		case fieldpass.ECONFLICT:
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Errorf("winners: got %d, want 1", wins)
	}
	got, err := s.Request(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantGrants := 0
	if got.Status == fieldpass.RequestApproved {
		wantGrants = 1
	}
	if n := s.count(t, `SELECT count(*) FROM grants`); n != wantGrants {
		t.Errorf("grants: got %d, want %d (request %s)", n, wantGrants, got.Status)
	}
	if n := s.count(t, `SELECT count(*) FROM audit_events WHERE action IN ('request.approve', 'request.deny')`); n != 1 {
		t.Errorf("decisions recorded: got %d, want 1", n)
	}
}

// TestListenGrants: creating and revoking a grant are announced within a
// second; nothing else is.
func TestListenGrants(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx, cancel := context.WithCancel(t.Context())
	ids := make(chan string, 10)
	done := make(chan error, 1)
	go func() { done <- s.ListenGrants(ctx, func(id string) { ids <- id }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ListenGrants: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("ListenGrants did not return within 5s of cancel")
		}
	})
	wantID(t, ids, "", 5*time.Second)

	g := s.mustGrant(t, fieldpass.Grant{Subject: "a@example.com", Devices: []string{"pump-1"}, Services: []string{"ssh"}})
	wantID(t, ids, g.ID, time.Second)
	if _, err := s.RevokeGrant(ctx, operator, g.ID); err != nil {
		t.Fatal(err)
	}
	wantID(t, ids, g.ID, time.Second)
	// A failed revocation is quiet; the next grant's id comes first.
	if _, err := s.RevokeGrant(ctx, operator, g.ID); err == nil {
		t.Fatal("second revocation accepted")
	}
	g2 := s.mustGrant(t, fieldpass.Grant{Subject: "a@example.com", Devices: []string{"pump-1"}, Services: []string{"ssh"}})
	wantID(t, ids, g2.ID, time.Second)
}
