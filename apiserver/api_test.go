package apiserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/tunnel"
)

// The people's API against a real Postgres, through the Go client where a
// test reads as a user's story, and through raw HTTP where it is about
// what goes over the wire (bad bodies, bad parameters).

// Caller kinds: a person of each role, and every way of not being one.
const (
	kAdmin     = "admin"
	kApprover  = "approver"
	kEngineer  = "engineer"
	kAuditor   = "auditor"
	kVendor    = "vendor" // no role
	kNone      = "no-token"
	kMalformed = "malformed"
	kExpired   = "expired"
	kRevoked   = "revoked"
	kForged    = "forged" // well-formed, never issued
	kDisabled  = "disabled"
)

// people are the caller kinds that are logged-in people, and their emails.
var people = map[string]string{
	kAdmin:    "admin@example.com",
	kApprover: "approver@example.com",
	kEngineer: "engineer@example.com",
	kAuditor:  "auditor@example.com",
	kVendor:   "vendor@partner.example",
}

var roleOf = map[string][]fieldpass.Role{
	kAdmin:    {fieldpass.RoleAdmin},
	kApprover: {fieldpass.RoleApprover},
	kEngineer: {fieldpass.RoleEngineer},
	kAuditor:  {fieldpass.RoleAuditor},
	kVendor:   nil,
}

// Grant limits of the test broker: shorter than the defaults, so that
// "over the limit" is easy to say.
var testLimits = fieldpass.GrantLimits{
	Vendor: 24 * time.Hour,
	ByRole: map[fieldpass.Role]time.Duration{fieldpass.RoleEngineer: 72 * time.Hour},
}

// testClock is the clock of both the store and the API: fixed unless a
// test moves it, so that expiry needs no sleeping.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// fixture is an API server on a fresh database with devices alpha
// (site=north) and beta (site=south), a decommissioned gamma, a person of
// each role, and tokens for every caller kind. The engineer holds a grant
// for ssh on alpha by name; the vendor one for ssh and web on site=south.
type fixture struct {
	db      *postgres.DB
	srv     *httptest.Server
	clock   *testClock
	start   time.Time
	tokens  map[string]string // caller kind -> token
	grantEn *fieldpass.Grant  // the engineer's
	grantVe *fieldpass.Grant  // the vendor's
	seq     atomic.Int64
}

// fixtureOption changes the API's configuration of a fixture.
type fixtureOption func(t *testing.T, db *postgres.DB, cfg *apiserver.Config)

// withDenialRecord gives the fixture's rules (package access) a running
// session manager, on a broker of its own: what is refused goes on the
// record as in a running broker. The API itself gets no session manager,
// so that connects and the browser terminal answer as without one.
func withDenialRecord(t *testing.T, db *postgres.DB, cfg *apiserver.Config) {
	t.Helper()
	b, err := broker.New(t.Context(), broker.Config{ID: "matrix-broker", PrivateKey: mustKey(t),
		WGListen: netip.MustParseAddrPort("127.0.0.1:0"), Logger: brokertest.Logger()}, db)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- b.Serve(ctx) }()
	m, err := broker.NewSessions(ctx, b, db, broker.SessionsConfig{Logger: brokertest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran; <-served; b.Close() })
	cfg.Access = access.New(access.Config{DB: db, Sessions: m, GrantLimits: cfg.GrantLimits, Now: cfg.Now})
}

func newFixture(t *testing.T, opts ...fixtureOption) *fixture {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	start := time.Now().UTC().Truncate(time.Second)
	clk := &testClock{now: start}
	db.Now = clk.Now
	cfg := apiserver.Config{
		DB:          db,
		GrantLimits: testLimits,
		Now:         clk.Now,
		// A loopback broker over plain http: the portal cookie is
		// fieldpass_session (over https it is __Host-fieldpass_session).
		PublicURL: "http://127.0.0.1",
		AuthRate:  1e6, AuthBurst: 1e6,
		AuthFailRate: 1e6, AuthFailBurst: 1e6,
		EnrollRate: 1e6, EnrollBurst: 1e6,
	}
	for _, o := range opts {
		o(t, db, &cfg)
	}
	api := apiserver.New(cfg)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	f := &fixture{db: db, srv: srv, clock: clk, start: start, tokens: map[string]string{}}

	f.enroll(t, "alpha", map[string]string{"site": "north"})
	f.enroll(t, "beta", map[string]string{"site": "south"})
	f.enroll(t, "gamma", map[string]string{"site": "south"})
	if _, err := db.SetDeviceState(ctx, "gamma", fieldpass.DeviceDecommissioned); err != nil {
		t.Fatal(err)
	}

	for kind, email := range people {
		f.mustUser(t, email, roleOf[kind]...)
		f.tokens[kind] = f.mustToken(t, email, 24*time.Hour)
	}
	f.tokens[kNone] = ""
	f.tokens[kMalformed] = "not-a-token"
	f.tokens[kForged] = fieldpass.FormatToken([32]byte{1, 2, 3})

	// Expired: issued an hour ago for a second.
	f.mustUser(t, "late@example.com", fieldpass.RoleAdmin)
	clk.Set(start.Add(-time.Hour))
	f.tokens[kExpired] = f.mustToken(t, "late@example.com", time.Second)
	clk.Set(start)

	f.mustUser(t, "gone@example.com", fieldpass.RoleAdmin)
	tok, rec, err := db.IssueToken(ctx, "operator:test", "gone@example.com", fieldpass.TokenCLI, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.RevokeToken(ctx, "operator:test", rec.ID); err != nil {
		t.Fatal(err)
	}
	f.tokens[kRevoked] = tok

	f.mustUser(t, "off@example.com", fieldpass.RoleAdmin)
	f.tokens[kDisabled] = f.mustToken(t, "off@example.com", time.Hour)
	if _, err := db.SetUserDisabled(ctx, "operator:test", "off@example.com", true); err != nil {
		t.Fatal(err)
	}

	f.grantEn = f.mustGrant(t, fieldpass.Grant{Subject: people[kEngineer], Devices: []string{"alpha"},
		Services: []string{"ssh"}, End: start.Add(8 * time.Hour), Reason: "maintenance"})
	f.grantVe = f.mustGrant(t, fieldpass.Grant{Subject: people[kVendor], Selector: map[string]string{"site": "south"},
		Services: []string{"ssh", "web"}, End: start.Add(4 * time.Hour), Reason: "vendor support"})
	return f
}

func (f *fixture) enroll(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	tok, _, err := f.db.CreateEnrollmentToken(ctx, name, labels, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	prefix := netip.MustParsePrefix("10.77.0.0/16")
	_, err = f.db.Enroll(ctx, tok, mustKey(t).Public().String(), "v1", func(seq int64) (netip.Addr, error) {
		return fieldpass.TunnelAddress(prefix, seq-1)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) mustUser(t *testing.T, email string, roles ...fieldpass.Role) {
	t.Helper()
	if _, err := f.db.EnsureUser(context.Background(), "operator:test", email, roles); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) mustToken(t *testing.T, email string, ttl time.Duration) string {
	t.Helper()
	return f.mustTokenOf(t, email, fieldpass.TokenCLI, ttl)
}

func (f *fixture) mustTokenOf(t *testing.T, email string, kind fieldpass.TokenKind, ttl time.Duration) string {
	t.Helper()
	tok, _, err := f.db.IssueToken(context.Background(), "operator:test", email, kind, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) mustGrant(t *testing.T, g fieldpass.Grant) *fieldpass.Grant {
	t.Helper()
	out, err := f.db.CreateGrant(context.Background(), "operator:test", g, fieldpass.HardMaxGrantDuration)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mustRequest files a request by email for a service of alpha no other
// request uses, so that requests never collide on "one pending".
func (f *fixture) mustRequest(t *testing.T, email string) *fieldpass.AccessRequest {
	t.Helper()
	r, err := f.db.CreateRequest(context.Background(), fieldpass.AccessRequest{
		Requester: email, Device: "alpha", Service: fmt.Sprintf("svc-%d", f.seq.Add(1)),
		Duration: time.Hour, Reason: "fix it",
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mustSession opens a session of the engineer on alpha's ssh.
func (f *fixture) mustSession(t *testing.T) *fieldpass.Session {
	t.Helper()
	return f.mustSessionOf(t, people[kEngineer], "alpha", "ssh", f.grantEn.ID)
}

func (f *fixture) mustSessionOf(t *testing.T, email, device, service, grantID string) *fieldpass.Session {
	t.Helper()
	s, err := f.db.OpenSession(context.Background(), fieldpass.Session{
		User: email, Device: device, Service: service, GrantID: grantID,
		ClientAddr: "192.0.2.1:5000", BrokerID: "b1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// client is the Go client as kind.
func (f *fixture) client(kind string) *httpapi.Client {
	c := httpapi.NewClient(f.srv.URL, f.tokens[kind])
	if kind == kMalformed {
		// The client refuses to send a malformed token; send it raw.
		c.HTTP = &http.Client{Transport: rawToken{f.tokens[kind]}}
		c.Token = ""
	}
	return c
}

// rawToken sets an Authorization header the client would refuse to send.
type rawToken struct{ tok string }

func (rt rawToken) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+rt.tok)
	return http.DefaultTransport.RoundTrip(r)
}

// call sends a raw request as kind and returns the status and body.
func (f *fixture) call(t *testing.T, kind, method, path, contentType, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if tok := f.tokens[kind]; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// wantCode checks that err is a *fieldpass.Error with code and a message
// containing msg.
func wantCode(t *testing.T, err error, code, msg string) {
	t.Helper()
	fe, ok := err.(*fieldpass.Error)
	if !ok {
		t.Fatalf("error: got %T %v, want *fieldpass.Error %s", err, err, code)
	}
	if fe.Code != code || !strings.Contains(fe.Message, msg) {
		t.Fatalf("error: got %s: %q, want %s: containing %q", fe.Code, fe.Message, code, msg)
	}
}

// must(call())(t) is call's value, or the test stops at its error.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func grantIDs(gs []*fieldpass.Grant) []string {
	var ids []string
	for _, g := range gs {
		ids = append(ids, g.ID)
	}
	slices.Sort(ids)
	return ids
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestMe(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	me := must(f.client(kEngineer).Me(ctx))(t)
	if me.Email != people[kEngineer] || !slices.Equal(me.Roles, []fieldpass.Role{fieldpass.RoleEngineer}) || me.TokenKind != "cli" {
		t.Fatalf("Me: got %+v", me)
	}
	if !me.ExpiresAt.Equal(f.start.Add(24 * time.Hour)) {
		t.Errorf("Me.ExpiresAt: got %s, want %s", me.ExpiresAt, f.start.Add(24*time.Hour))
	}
	// A vendor has no roles: an empty list, not null.
	_, body := f.call(t, kVendor, "GET", "/api/v1/me", "", "")
	if !strings.Contains(string(body), `"roles":[]`) {
		t.Errorf("vendor's me: got %s, want roles []", body)
	}
}

// TestAuthFailures: each way of not being logged in gets its own status and
// a reason, and none of them reaches a handler.
func TestAuthFailures(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		kind   string
		status int
		code   string
		msg    string
	}{
		{kNone, 401, fieldpass.EINVALID, "not logged in"},
		{kMalformed, 401, fieldpass.EINVALID, "malformed token"},
		{kForged, 401, fieldpass.ENOTFOUND, "unknown token"},
		{kExpired, 401, fieldpass.EEXPIRED, "expired"},
		{kRevoked, 403, fieldpass.EFORBIDDEN, "revoked"},
		{kDisabled, 403, fieldpass.EFORBIDDEN, "disabled"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			status, body := f.call(t, tc.kind, "GET", "/api/v1/me", "", "")
			var e tunnel.ErrorResponse
			json.Unmarshal(body, &e)
			if status != tc.status || e.Code != tc.code || !strings.Contains(e.Message, tc.msg) {
				t.Fatalf("got %d %s: %q, want %d %s: containing %q", status, e.Code, e.Message, tc.status, tc.code, tc.msg)
			}
			_, err := f.client(tc.kind).Me(context.Background())
			wantCode(t, err, tc.code, tc.msg)
		})
	}
	// A token is never taken from the URL.
	req, _ := http.NewRequest("GET", f.srv.URL+"/api/v1/me?token="+f.tokens[kAdmin]+"&access_token="+f.tokens[kAdmin], nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("token in the query: got %d, want 401", resp.StatusCode)
	}
	// Nor from another scheme.
	req, _ = http.NewRequest("GET", f.srv.URL+"/api/v1/me", nil)
	req.Header.Set("Authorization", "Basic "+f.tokens[kAdmin])
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("Basic auth: got %d, want 401", resp.StatusCode)
	}
}

func TestGrantCreate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	admin := f.client(kAdmin)
	base := httpapi.GrantCreate{Devices: []string{"alpha"}, Services: []string{"ssh"}, Reason: "upgrade", Ticket: "CHG-1"}
	with := func(subject, duration string) httpapi.GrantCreate {
		g := base
		g.Subject, g.Duration = subject, duration
		return g
	}

	// A vendor not seen yet gets the vendor limit (24h here).
	g := must(admin.CreateGrant(ctx, with("New.Vendor@Partner.example", "24h")))(t)
	if g.Subject != "new.vendor@partner.example" || !g.Start.Equal(f.start) || !g.End.Equal(f.start.Add(24*time.Hour)) ||
		g.CreatedBy != "user:"+people[kAdmin] || g.Ticket != "CHG-1" {
		t.Fatalf("created grant: got %+v", g)
	}
	_, err := admin.CreateGrant(ctx, with("other.vendor@partner.example", "25h"))
	wantCode(t, err, fieldpass.EINVALID, "longer than the 1d allowed")
	// So does a known user with no role.
	_, err = admin.CreateGrant(ctx, with(people[kVendor], "25h"))
	wantCode(t, err, fieldpass.EINVALID, "longer than")
	// An engineer gets the engineer limit (72h), an approver the default (30 days).
	must(admin.CreateGrant(ctx, with(people[kEngineer], "72h")))(t)
	_, err = admin.CreateGrant(ctx, with(people[kEngineer], "73h"))
	wantCode(t, err, fieldpass.EINVALID, "longer than the 3d")
	must(admin.CreateGrant(ctx, with(people[kApprover], "720h")))(t)

	// An end time instead of a duration; a start in the future.
	byEnd := with(people[kVendor], "")
	byEnd.Start, byEnd.End = f.start.Add(time.Hour), f.start.Add(2*time.Hour)
	g = must(admin.CreateGrant(ctx, byEnd))(t)
	if !g.Start.Equal(byEnd.Start) || !g.End.Equal(byEnd.End) {
		t.Errorf("grant by end: got %s..%s, want %s..%s", g.Start, g.End, byEnd.Start, byEnd.End)
	}
	// An end time alone starts now.
	endOnly := with(people[kVendor], "")
	endOnly.End = f.start.Add(3 * time.Hour)
	g = must(admin.CreateGrant(ctx, endOnly))(t)
	if !g.Start.Equal(f.start) || !g.End.Equal(endOnly.End) {
		t.Errorf("grant by end alone: got %s..%s, want %s..%s", g.Start, g.End, f.start, endOnly.End)
	}
	// Label selectors.
	sel := with(people[kVendor], "1h")
	sel.Devices, sel.Selector = nil, map[string]string{"site": "north"}
	must(admin.CreateGrant(ctx, sel))(t)

	for _, tc := range []struct {
		name string
		edit func(*httpapi.GrantCreate)
		msg  string
	}{
		{"both duration and end", func(g *httpapi.GrantCreate) { g.End = f.start.Add(time.Hour) }, "not both"},
		{"neither duration nor end", func(g *httpapi.GrantCreate) { g.Duration = "" }, "every grant ends"},
		{"bad duration", func(g *httpapi.GrantCreate) { g.Duration = "a while" }, "invalid duration"},
		{"negative duration", func(g *httpapi.GrantCreate) { g.Duration = "-1h" }, "positive"},
		{"huge duration string", func(g *httpapi.GrantCreate) { g.Duration = strings.Repeat("1", 100) + "h" }, "longer than"},
		{"ended already", func(g *httpapi.GrantCreate) {
			g.Duration, g.Start, g.End = "", f.start.Add(-2*time.Hour), f.start.Add(-time.Hour)
		}, "has passed"},
		{"bad subject", func(g *httpapi.GrantCreate) { g.Subject = "not an email" }, "grant subject"},
		{"no subject", func(g *httpapi.GrantCreate) { g.Subject = "" }, "grant subject"},
		{"no devices", func(g *httpapi.GrantCreate) { g.Devices = nil }, "needs devices"},
		{"devices and selector", func(g *httpapi.GrantCreate) { g.Selector = map[string]string{"a": "b"} }, "not both"},
		{"bad device", func(g *httpapi.GrantCreate) { g.Devices = []string{"Alpha!"} }, "invalid device name"},
		{"too many devices", func(g *httpapi.GrantCreate) {
			g.Devices = nil
			for i := range 257 {
				g.Devices = append(g.Devices, fmt.Sprintf("d%d", i))
			}
		}, "too many devices"},
		{"no services", func(g *httpapi.GrantCreate) { g.Services = nil }, "at least one service"},
		{"bad service", func(g *httpapi.GrantCreate) { g.Services = []string{"SSH"} }, "invalid service name"},
		{"no reason", func(g *httpapi.GrantCreate) { g.Reason = "" }, "reason is required"},
		{"long reason", func(g *httpapi.GrantCreate) { g.Reason = strings.Repeat("x", 1001) }, "reason longer"},
		{"control in ticket", func(g *httpapi.GrantCreate) { g.Ticket = "a\nb" }, "control character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := with(people[kVendor], "1h")
			tc.edit(&g)
			_, err := admin.CreateGrant(ctx, g)
			wantCode(t, err, fieldpass.EINVALID, tc.msg)
		})
	}

	// What the wire refuses before any of that.
	for _, tc := range []struct {
		name, contentType, body, msg string
	}{
		{"not JSON", "application/json", "{", "invalid JSON"},
		{"unknown field", "application/json", `{"subject":"a@b.example","admin":true}`, "unknown field"},
		{"trailing data", "application/json", `{"subject":"a@b.example"} {}`, "trailing data"},
		{"wrong type", "application/json", `{"subject":42}`, "invalid JSON"},
		{"form", "application/x-www-form-urlencoded", "subject=a", "Content-Type"},
		{"no content type", "", "{}", "Content-Type"},
		{"oversize", "application/json", `{"reason":"` + strings.Repeat("x", 70<<10) + `"}`, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := f.call(t, kAdmin, "POST", "/api/v1/grants", tc.contentType, tc.body)
			if status != 400 || !strings.Contains(string(body), tc.msg) {
				t.Fatalf("got %d %s, want 400 containing %q", status, body, tc.msg)
			}
		})
	}

	// Every creation is on the record, by the admin.
	evs := must(f.client(kAuditor).Audit(ctx, httpapi.AuditQuery{Action: fieldpass.AuditGrantCreate, Actor: "user:" + people[kAdmin]}))(t)
	if len(evs) != 6 {
		t.Errorf("grant.create events by the admin: got %d, want 6", len(evs))
	}
}

func TestGrantListVisibility(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	expired := f.mustGrant(t, fieldpass.Grant{Subject: people[kEngineer], Devices: []string{"beta"}, Services: []string{"ssh"},
		Start: f.start.Add(-2 * time.Hour), End: f.start.Add(time.Minute), Reason: "old"})
	f.clock.Set(f.start.Add(2 * time.Minute))
	all := sorted(f.grantEn.ID, f.grantVe.ID, expired.ID)

	for _, tc := range []struct {
		kind string
		q    httpapi.GrantQuery
		want []string
	}{
		{kAdmin, httpapi.GrantQuery{}, all},
		{kAuditor, httpapi.GrantQuery{}, all},
		{kAdmin, httpapi.GrantQuery{Subject: "ENGINEER@example.com"}, sorted(f.grantEn.ID, expired.ID)},
		{kAdmin, httpapi.GrantQuery{Device: "beta"}, sorted(f.grantVe.ID, expired.ID)},
		{kAdmin, httpapi.GrantQuery{Device: "beta", Active: true}, sorted(f.grantVe.ID)},
		{kEngineer, httpapi.GrantQuery{}, sorted(f.grantEn.ID, expired.ID)},
		{kEngineer, httpapi.GrantQuery{Active: true}, sorted(f.grantEn.ID)},
		{kEngineer, httpapi.GrantQuery{Subject: people[kEngineer]}, sorted(f.grantEn.ID, expired.ID)},
		{kVendor, httpapi.GrantQuery{}, sorted(f.grantVe.ID)},
		{kApprover, httpapi.GrantQuery{}, nil},
	} {
		t.Run(fmt.Sprintf("%s %+v", tc.kind, tc.q), func(t *testing.T) {
			gs := must(f.client(tc.kind).Grants(ctx, tc.q))(t)
			if got := grantIDs(gs); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	// Someone else's grants are not theirs to list.
	for _, kind := range []string{kEngineer, kVendor, kApprover} {
		_, err := f.client(kind).Grants(ctx, httpapi.GrantQuery{Subject: people[kAdmin]})
		wantCode(t, err, fieldpass.EFORBIDDEN, "only grants made out to you")
	}
	// An empty list is [], not null.
	if _, body := f.call(t, kApprover, "GET", "/api/v1/grants", "", ""); strings.TrimSpace(string(body)) != "[]" {
		t.Errorf("approver's grants: got %s, want []", body)
	}
	for _, q := range []string{"subject=nobody", "device=Bad!", "active=maybe", "limit=0", "limit=1001", "limit=x"} {
		status, body := f.call(t, kAdmin, "GET", "/api/v1/grants?"+q, "", "")
		if status != 400 {
			t.Errorf("?%s: got %d %s, want 400", q, status, body)
		}
	}
	// Unknown parameters are ignored; limit is honoured.
	status, body := f.call(t, kAdmin, "GET", "/api/v1/grants?colour=blue&limit=1", "", "")
	var gs []fieldpass.Grant
	if err := json.Unmarshal(body, &gs); status != 200 || err != nil || len(gs) != 1 {
		t.Errorf("?colour=blue&limit=1: got %d %s", status, body)
	}
}

func TestGrantRevoke(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	admin := f.client(kAdmin)
	g := must(admin.RevokeGrant(ctx, f.grantEn.ID))(t)
	if !g.Revoked() || g.RevokedBy != "user:"+people[kAdmin] || !g.RevokedAt.Equal(f.start) {
		t.Fatalf("revoked grant: got %+v", g)
	}
	_, err := admin.RevokeGrant(ctx, f.grantEn.ID)
	wantCode(t, err, fieldpass.ECONFLICT, "already revoked")
	_, err = admin.RevokeGrant(ctx, "not-a-uuid")
	wantCode(t, err, fieldpass.EINVALID, "invalid grant id")
	_, err = admin.RevokeGrant(ctx, "00000000-0000-0000-0000-000000000000")
	wantCode(t, err, fieldpass.ENOTFOUND, "not found")
	_, err = admin.RevokeGrant(ctx, "..")
	wantCode(t, err, fieldpass.EINVALID, "invalid grant id")
	_, err = f.client(kEngineer).RevokeGrant(ctx, f.grantVe.ID)
	wantCode(t, err, fieldpass.EFORBIDDEN, "admin role")

	// The engineer no longer reaches alpha.
	devs := must(f.client(kEngineer).Devices(ctx))(t)
	if len(devs) != 0 {
		t.Errorf("devices after revoke: got %+v, want none", devs)
	}
	evs := must(f.client(kAuditor).Audit(ctx, httpapi.AuditQuery{Action: fieldpass.AuditGrantRevoke}))(t)
	if len(evs) != 1 || evs[0].Target != "grant:"+f.grantEn.ID || evs[0].Actor != "user:"+people[kAdmin] {
		t.Errorf("grant.revoke events: got %+v", evs)
	}
}

func TestRequestFlow(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	eng, appr, admin, vendor := f.client(kEngineer), f.client(kApprover), f.client(kAdmin), f.client(kVendor)

	// The engineer asks for web on beta; the approver approves.
	req := must(eng.CreateRequest(ctx, httpapi.RequestCreate{Device: "beta", Service: "web", Duration: "2h", Reason: "check UI", Ticket: "INC-7"}))(t)
	if req.Requester != people[kEngineer] || req.Status != fieldpass.RequestPending || req.Duration != 2*time.Hour {
		t.Fatalf("request: got %+v", req)
	}
	_, err := eng.CreateRequest(ctx, httpapi.RequestCreate{Device: "beta", Service: "web", Duration: "1h", Reason: "again"})
	wantCode(t, err, fieldpass.ECONFLICT, "already have a pending request")

	// Who may see it.
	for _, kind := range []string{kEngineer, kApprover, kAdmin, kAuditor} {
		got := must(f.client(kind).Request(ctx, req.ID))(t)
		if got.ID != req.ID {
			t.Errorf("%s: got request %s", kind, got.ID)
		}
	}
	_, err = vendor.Request(ctx, req.ID)
	wantCode(t, err, fieldpass.ENOTFOUND, "not found")

	// The engineer cannot decide (no role); the approver can.
	_, err = eng.DecideRequest(ctx, req.ID, true, "")
	wantCode(t, err, fieldpass.EFORBIDDEN, "approver or admin role")
	dec := must(appr.DecideRequest(ctx, req.ID, true, ""))(t)
	if dec.Status != fieldpass.RequestApproved || dec.DecidedBy != people[kApprover] || dec.GrantID == "" || !dec.DecidedAt.Equal(f.start) {
		t.Fatalf("approved: got %+v", dec)
	}
	_, err = admin.DecideRequest(ctx, req.ID, false, "")
	wantCode(t, err, fieldpass.ECONFLICT, "already approved")

	// The grant exists, is the engineer's, and shows in their devices.
	gs := must(eng.Grants(ctx, httpapi.GrantQuery{Device: "beta", Active: true}))(t)
	if len(gs) != 1 || gs[0].ID != dec.GrantID || !gs[0].End.Equal(f.start.Add(2*time.Hour)) || gs[0].Ticket != "INC-7" {
		t.Fatalf("engineer's grants on beta: got %+v", gs)
	}
	devs := must(eng.Devices(ctx))(t)
	if names := deviceNames(devs); !slices.Equal(names, []string{"alpha", "beta"}) {
		t.Errorf("engineer's devices: got %v", names)
	}
	// The requester sees who decided when.
	got := must(eng.Request(ctx, req.ID))(t)
	if got.DecidedBy != people[kApprover] || got.Status != fieldpass.RequestApproved {
		t.Errorf("requester's view: got %+v", got)
	}

	// An approver cannot approve their own request; an admin can.
	own := must(appr.CreateRequest(ctx, httpapi.RequestCreate{Device: "alpha", Service: "ssh", Duration: "1h", Reason: "mine"}))(t)
	_, err = appr.DecideRequest(ctx, own.ID, true, "")
	wantCode(t, err, fieldpass.EFORBIDDEN, "your own request")
	_, err = appr.DecideRequest(ctx, own.ID, false, "")
	wantCode(t, err, fieldpass.EFORBIDDEN, "your own request")
	must(admin.DecideRequest(ctx, own.ID, true, ""))(t)

	// Deny: no grant.
	vreq := must(vendor.CreateRequest(ctx, httpapi.RequestCreate{Device: "alpha", Service: "ssh", Duration: "1h", Reason: "vendor"}))(t)
	den := must(appr.DecideRequest(ctx, vreq.ID, false, "ask for ssh only"))(t)
	if den.Status != fieldpass.RequestDenied || den.GrantID != "" || den.Comment != "ask for ssh only" {
		t.Fatalf("denied: got %+v", den)
	}
	if mine := must(vendor.Request(ctx, vreq.ID))(t); mine.Comment != "ask for ssh only" {
		t.Errorf("the requester reads the comment %q", mine.Comment)
	}
	if gs := must(vendor.Grants(ctx, httpapi.GrantQuery{Device: "alpha"}))(t); len(gs) != 0 {
		t.Errorf("vendor's grants on alpha after deny: got %d", len(gs))
	}

	// Lists: approvers see all, others their own.
	all := []string{req.ID, own.ID, vreq.ID}
	for _, tc := range []struct {
		kind string
		q    httpapi.RequestQuery
		want []string
	}{
		{kApprover, httpapi.RequestQuery{}, all},
		{kAdmin, httpapi.RequestQuery{}, all},
		{kAuditor, httpapi.RequestQuery{}, all},
		{kApprover, httpapi.RequestQuery{Mine: true}, []string{own.ID}},
		{kApprover, httpapi.RequestQuery{Status: "denied"}, []string{vreq.ID}},
		{kEngineer, httpapi.RequestQuery{}, []string{req.ID}},
		{kVendor, httpapi.RequestQuery{}, []string{vreq.ID}},
		{kVendor, httpapi.RequestQuery{Status: "approved"}, nil},
	} {
		rs := must(f.client(tc.kind).Requests(ctx, tc.q))(t)
		var ids []string
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
		slices.Sort(ids)
		if want := sorted(tc.want...); !slices.Equal(ids, want) {
			t.Errorf("%s %+v: got %v, want %v", tc.kind, tc.q, ids, want)
		}
	}
	_, err = appr.Requests(ctx, httpapi.RequestQuery{Status: "maybe"})
	wantCode(t, err, fieldpass.EINVALID, "invalid request status")

	// Refusals at filing.
	for _, tc := range []struct {
		name string
		kind string
		body httpapi.RequestCreate
		code string
		msg  string
	}{
		{"over the vendor limit", kVendor, httpapi.RequestCreate{Device: "beta", Service: "ssh", Duration: "25h", Reason: "x"}, fieldpass.EINVALID, "requested duration 25h is longer than the 1d a grant to you may last: ask for 1d or less"},
		// Only who sees every device learns that one is missing; to anyone
		// else the answer is alike (requests_probe_test.go).
		{"unknown device", kAdmin, httpapi.RequestCreate{Device: "nowhere", Service: "ssh", Duration: "1h", Reason: "x"}, fieldpass.ENOTFOUND, "not found"},
		{"decommissioned device", kAdmin, httpapi.RequestCreate{Device: "gamma", Service: "ssh", Duration: "1h", Reason: "x"}, fieldpass.ENOTFOUND, "not found"},
		{"no duration", kEngineer, httpapi.RequestCreate{Device: "beta", Service: "ssh", Reason: "x"}, fieldpass.EINVALID, "invalid duration"},
		{"too short", kEngineer, httpapi.RequestCreate{Device: "beta", Service: "ssh", Duration: "30s", Reason: "x"}, fieldpass.EINVALID, "at least 1m"},
		{"no reason", kEngineer, httpapi.RequestCreate{Device: "beta", Service: "ssh", Duration: "1h"}, fieldpass.EINVALID, "reason is required"},
		{"bad service", kEngineer, httpapi.RequestCreate{Device: "beta", Service: "s s", Duration: "1h", Reason: "x"}, fieldpass.EINVALID, "invalid service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.client(tc.kind).CreateRequest(ctx, tc.body)
			wantCode(t, err, tc.code, tc.msg)
		})
	}
	status, body := f.call(t, kEngineer, "POST", "/api/v1/requests", "application/json",
		`{"device":"beta","service":"ssh","duration":"1h","reason":"x","requester":"admin@example.com"}`)
	if status != 400 || !strings.Contains(string(body), "unknown field") {
		t.Errorf("request for someone else: got %d %s, want 400 unknown field", status, body)
	}
	status, body = f.call(t, kEngineer, "POST", "/api/v1/requests", "application/json",
		`{"reason":"`+strings.Repeat("x", 9<<10)+`"}`)
	if status != 400 || !strings.Contains(string(body), "larger than") {
		t.Errorf("oversize request: got %d %s, want 400", status, body)
	}
	_, err = eng.Request(ctx, "nope")
	wantCode(t, err, fieldpass.EINVALID, "invalid request id")
	_, err = appr.DecideRequest(ctx, "00000000-0000-0000-0000-000000000000", true, "")
	wantCode(t, err, fieldpass.ENOTFOUND, "not found")
}

// TestApproveWithinRequesterLimit: approval uses the limit of the
// requester's roles at decision time.
func TestApproveWithinRequesterLimit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	req := must(f.client(kEngineer).CreateRequest(ctx, httpapi.RequestCreate{Device: "beta", Service: "ssh", Duration: "48h", Reason: "long job"}))(t)
	// The engineer loses their role: now a vendor, limited to 24h.
	f.mustUser(t, people[kEngineer])
	_, err := f.client(kApprover).DecideRequest(ctx, req.ID, true, "")
	wantCode(t, err, fieldpass.EINVALID, "request asks for 2d, longer than the 1d allowed for engineer@example.com")
	must(f.client(kApprover).DecideRequest(ctx, req.ID, false, ""))(t)
}

func deviceNames(ds []httpapi.DeviceView) []string {
	var names []string
	for _, d := range ds {
		names = append(names, d.Name)
	}
	return names
}

func TestDevicesView(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// A second, later grant for the engineer on alpha adds a service and
	// moves the end; a revoked one and a future one add nothing.
	f.mustGrant(t, fieldpass.Grant{Subject: people[kEngineer], Selector: map[string]string{"site": "north"},
		Services: []string{"web"}, End: f.start.Add(10 * time.Hour), Reason: "more"})
	rev := f.mustGrant(t, fieldpass.Grant{Subject: people[kEngineer], Devices: []string{"beta"},
		Services: []string{"ssh"}, End: f.start.Add(10 * time.Hour), Reason: "revoked"})
	if _, err := f.db.RevokeGrant(ctx, "operator:test", rev.ID); err != nil {
		t.Fatal(err)
	}
	f.mustGrant(t, fieldpass.Grant{Subject: people[kEngineer], Devices: []string{"beta"}, Services: []string{"ssh"},
		Start: f.start.Add(time.Hour), End: f.start.Add(10 * time.Hour), Reason: "later"})

	for _, kind := range []string{kAdmin, kAuditor} {
		devs := must(f.client(kind).Devices(ctx))(t)
		if names := deviceNames(devs); !slices.Equal(names, []string{"alpha", "beta"}) {
			t.Errorf("%s: got %v, want alpha and beta (not the decommissioned gamma)", kind, names)
		}
	}
	devs := must(f.client(kEngineer).Devices(ctx))(t)
	if len(devs) != 1 || devs[0].Name != "alpha" || !slices.Equal(devs[0].Services, []string{"ssh", "web"}) ||
		!devs[0].GrantEnds.Equal(f.start.Add(10*time.Hour)) || devs[0].State != "active" || devs[0].Labels["site"] != "north" {
		t.Fatalf("engineer: got %+v", devs)
	}
	devs = must(f.client(kVendor).Devices(ctx))(t)
	if len(devs) != 1 || devs[0].Name != "beta" || !slices.Equal(devs[0].Services, []string{"ssh", "web"}) ||
		!devs[0].GrantEnds.Equal(f.grantVe.End) {
		t.Fatalf("vendor: got %+v", devs)
	}
	if devs := must(f.client(kApprover).Devices(ctx))(t); len(devs) != 0 {
		t.Errorf("approver without grants: got %+v", devs)
	}
	// Grants past their end count no more.
	f.clock.Set(f.grantVe.End)
	if devs := must(f.client(kVendor).Devices(ctx))(t); len(devs) != 0 {
		t.Errorf("vendor after the grant ended: got %+v", devs)
	}
	// A disabled device stays listed, marked so.
	f.clock.Set(f.start)
	if _, err := f.db.SetDeviceState(ctx, "beta", fieldpass.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	devs = must(f.client(kVendor).Devices(ctx))(t)
	if len(devs) != 1 || devs[0].State != "disabled" {
		t.Errorf("vendor with beta disabled: got %+v", devs)
	}
}

func sessionIDs(ss []*fieldpass.Session) []string {
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

func TestSessions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	es := f.mustSession(t)
	f.clock.Set(f.start.Add(time.Minute))
	vs := f.mustSessionOf(t, people[kVendor], "beta", "web", f.grantVe.ID)
	if _, err := f.db.EndSession(ctx, vs.ID, time.Time{}, 10, 20, fieldpass.EndClientClosed); err != nil {
		t.Fatal(err)
	}
	all := sorted(es.ID, vs.ID)

	for _, tc := range []struct {
		kind string
		q    httpapi.SessionQuery
		want []string
	}{
		{kAdmin, httpapi.SessionQuery{}, all},
		{kAuditor, httpapi.SessionQuery{}, all},
		{kAuditor, httpapi.SessionQuery{Device: "beta"}, []string{vs.ID}},
		{kAuditor, httpapi.SessionQuery{User: people[kEngineer]}, []string{es.ID}},
		{kAuditor, httpapi.SessionQuery{Open: true}, []string{es.ID}},
		{kAuditor, httpapi.SessionQuery{Since: f.start.Add(30 * time.Second)}, []string{vs.ID}},
		{kAuditor, httpapi.SessionQuery{Limit: 1}, []string{vs.ID}},
		{kEngineer, httpapi.SessionQuery{}, []string{es.ID}},
		{kEngineer, httpapi.SessionQuery{User: people[kEngineer]}, []string{es.ID}},
		{kVendor, httpapi.SessionQuery{}, []string{vs.ID}},
		{kVendor, httpapi.SessionQuery{Device: "alpha"}, nil},
		{kApprover, httpapi.SessionQuery{}, nil},
	} {
		t.Run(fmt.Sprintf("%s %+v", tc.kind, tc.q), func(t *testing.T) {
			ss := must(f.client(tc.kind).Sessions(ctx, tc.q))(t)
			if got := sessionIDs(ss); !slices.Equal(got, sorted(tc.want...)) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	ss := must(f.client(kAuditor).Sessions(ctx, httpapi.SessionQuery{Device: "beta"}))(t)
	if s := ss[0]; s.BytesIn != 10 || s.BytesOut != 20 || s.EndReason != fieldpass.EndClientClosed || s.User != people[kVendor] {
		t.Errorf("vendor's session as the auditor sees it: got %+v", s)
	}
	_, err := f.client(kEngineer).Sessions(ctx, httpapi.SessionQuery{User: people[kVendor]})
	wantCode(t, err, fieldpass.EFORBIDDEN, "only your own sessions")

	for _, q := range []string{"since=yesterday", "since=2030-01-02", "limit=0", "limit=-1", "limit=1001", "limit=ten",
		"open=perhaps", "device=-x", "user=" + strings.Repeat("a", 300) + "@example.com"} {
		status, body := f.call(t, kAuditor, "GET", "/api/v1/sessions?"+q, "", "")
		if status != 400 {
			t.Errorf("?%s: got %d %s, want 400", q, status, body)
		}
	}

	// An admin ends the live session: recorded, once.
	_, err = f.client(kAuditor).EndSession(ctx, es.ID)
	wantCode(t, err, fieldpass.EFORBIDDEN, "admin role")
	ended := must(f.client(kAdmin).EndSession(ctx, es.ID))(t)
	if ended.EndReason != fieldpass.EndByAdmin || !ended.End.Equal(f.start.Add(time.Minute)) {
		t.Fatalf("ended: got %+v", ended)
	}
	_, err = f.client(kAdmin).EndSession(ctx, es.ID)
	wantCode(t, err, fieldpass.ECONFLICT, "already ended")
	_, err = f.client(kAdmin).EndSession(ctx, vs.ID)
	wantCode(t, err, fieldpass.ECONFLICT, "client_closed")
	_, err = f.client(kAdmin).EndSession(ctx, "00000000-0000-0000-0000-000000000000")
	wantCode(t, err, fieldpass.ENOTFOUND, "not found")
	_, err = f.client(kAdmin).EndSession(ctx, "x")
	wantCode(t, err, fieldpass.EINVALID, "invalid session id")
	evs := must(f.client(kAuditor).Audit(ctx, httpapi.AuditQuery{Action: fieldpass.AuditSessionEnd, Target: "session:" + es.ID}))(t)
	if len(evs) != 1 || evs[0].Details["reason"] != "ended_by_admin" {
		t.Errorf("session.end of the ended session: got %+v", evs)
	}
}

func TestAudit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, kind := range []string{kAuditor, kAdmin} {
		evs := must(f.client(kind).Audit(ctx, httpapi.AuditQuery{}))(t)
		if len(evs) == 0 || evs[0].Seq != 1 {
			t.Fatalf("%s: got %d events", kind, len(evs))
		}
		// What the client decoded still checks out.
		var chain fieldpass.AuditChain
		for _, e := range evs {
			if err := chain.Add(e); err != nil {
				t.Fatalf("%s: chain of the events read over the API: %v", kind, err)
			}
		}
	}
	evs := must(f.client(kAuditor).Audit(ctx, httpapi.AuditQuery{Action: fieldpass.AuditGrantCreate, Limit: 1}))(t)
	if len(evs) != 1 || evs[0].Target != "grant:"+f.grantEn.ID || evs[0].Actor != "operator:test" {
		t.Errorf("first grant.create: got %+v", evs)
	}
	if evs := must(f.client(kAuditor).Audit(ctx, httpapi.AuditQuery{Since: f.start.Add(time.Second)}))(t); len(evs) != 0 {
		t.Errorf("events after now: got %d", len(evs))
	}
	for _, kind := range []string{kEngineer, kVendor, kApprover} {
		_, err := f.client(kind).Audit(ctx, httpapi.AuditQuery{})
		wantCode(t, err, fieldpass.EFORBIDDEN, "auditor or admin role")
	}
	for _, q := range []string{"since=now", "limit=0", "limit=100000", "actor=" + strings.Repeat("a", 1025), "target=%00"} {
		status, body := f.call(t, kAuditor, "GET", "/api/v1/audit?"+q, "", "")
		if status != 400 {
			t.Errorf("?%s: got %d %s, want 400", q, status, body)
		}
	}
}

// TestOtherUsersResources: a person's token reaches only their own
// requests, grants and sessions, whatever ids they guess.
func TestOtherUsersResources(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	vreq := f.mustRequest(t, people[kVendor])
	ereq := f.mustRequest(t, people[kEngineer])
	f.mustSession(t)
	vendor, eng := f.client(kVendor), f.client(kEngineer)

	_, err := vendor.Request(ctx, ereq.ID)
	wantCode(t, err, fieldpass.ENOTFOUND, "not found")
	_, err = eng.Request(ctx, vreq.ID)
	wantCode(t, err, fieldpass.ENOTFOUND, "not found")
	_, err = vendor.DecideRequest(ctx, vreq.ID, true, "")
	wantCode(t, err, fieldpass.EFORBIDDEN, "approver or admin role")
	_, err = vendor.RevokeGrant(ctx, f.grantVe.ID)
	wantCode(t, err, fieldpass.EFORBIDDEN, "admin role")
	if ss := must(vendor.Sessions(ctx, httpapi.SessionQuery{Device: "alpha"}))(t); len(ss) != 0 {
		t.Errorf("vendor sees sessions on alpha: %+v", ss)
	}
	if gs := must(vendor.Grants(ctx, httpapi.GrantQuery{Device: "alpha"}))(t); len(gs) != 0 {
		t.Errorf("vendor sees grants on alpha: %+v", gs)
	}
	if rs := must(vendor.Requests(ctx, httpapi.RequestQuery{}))(t); len(rs) != 1 || rs[0].ID != vreq.ID {
		t.Errorf("vendor's requests: %+v", rs)
	}
}

// The client on its own, against small fake brokers: what it sends, and
// how it turns every kind of failure into a *fieldpass.Error.

func TestClientRefusesPlainHTTPToRemoteBrokers(t *testing.T) {
	tok := fieldpass.FormatToken([32]byte{9})
	for _, tc := range []struct{ url, msg string }{
		{"http://broker.example.com", "refusing plain http"},
		{"http://10.0.0.1:8080", "refusing plain http"},
		{"ftp://broker.example.com", "invalid broker URL"},
		{"broker.example.com", "invalid broker URL"},
		{"https://user:secret@broker.example.com", "no credentials"},
		{"https://broker.example.com/?x=1", "no credentials, query or fragment"},
		{"https://broker.example.com/%zz", "invalid broker URL"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := httpapi.NewClient(tc.url, tok).Me(context.Background())
			wantCode(t, err, fieldpass.EINVALID, tc.msg)
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), tok) {
				t.Errorf("error repeats a secret: %v", err)
			}
		})
	}
}

func TestClientRequests(t *testing.T) {
	tok := fieldpass.FormatToken([32]byte{7})
	type seen struct {
		method, uri, auth, ctype, ua, body string
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), r.Header.Get("Content-Type"), r.Header.Get("User-Agent"), string(b)}
		switch r.URL.EscapedPath() {
		case "/prefix/api/v1/login/device/token":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			io.WriteString(w, `{"code":"authorization_pending","message":"not approved yet"}`)
		case "/prefix/api/v1/login/device":
			io.WriteString(w, `{"device_code":"dc","user_code":"ABCD-EFGH","verification_uri":"https://b/login/device","expires_in":600,"interval":5}`)
		case "/prefix/api/v1/sessions":
			io.WriteString(w, `[]`)
		case "/prefix/api/v1/grants/a%2Fb/revoke":
			w.WriteHeader(404)
			io.WriteString(w, `{"code":"not_found","message":"grant a/b not found"}`)
		default:
			io.WriteString(w, `{}`)
		}
	}))
	defer srv.Close()
	c := httpapi.NewClient(srv.URL+"/prefix/", tok)
	ctx := context.Background()

	since := time.Date(2030, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	if _, err := c.Sessions(ctx, httpapi.SessionQuery{Device: "alpha", User: "a+b@example.com", Since: since, Open: true, Limit: 5}); err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.method != "GET" || s.uri != "/prefix/api/v1/sessions?device=alpha&limit=5&open=true&since=2030-01-02T02%3A04%3A05.0000006Z&user=a%2Bb%40example.com" ||
		s.auth != "Bearer "+tok || !strings.HasPrefix(s.ua, "fieldpass/") {
		t.Errorf("sessions request: got %+v", s)
	}

	_, err := c.RevokeGrant(ctx, "a/b")
	wantCode(t, err, fieldpass.ENOTFOUND, "grant a/b not found")
	if s := <-got; s.method != "POST" || s.uri != "/prefix/api/v1/grants/a%2Fb/revoke" {
		t.Errorf("revoke request: got %+v", s)
	}

	if _, err := c.CreateRequest(ctx, httpapi.RequestCreate{Device: "alpha", Service: "ssh", Duration: "1h", Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s.ctype != "application/json" || !strings.Contains(s.body, `"duration":"1h"`) {
		t.Errorf("create request: got %+v", s)
	}

	// The device login sends no token, and hands back the broker's codes.
	start, err := c.StartDeviceLogin(ctx)
	if err != nil || start.UserCode != "ABCD-EFGH" || start.Interval != 5 {
		t.Fatalf("StartDeviceLogin: got %+v, %v", start, err)
	}
	if s := <-got; s.auth != "" {
		t.Errorf("device login start sent a token")
	}
	_, err = c.PollDeviceLogin(ctx, "dc")
	wantCode(t, err, "authorization_pending", "not approved yet")
	if s := <-got; s.auth != "" || s.body != `{"device_code":"dc"}` {
		t.Errorf("device login poll: got %+v", s)
	}

	// A malformed token is not sent at all.
	_, err = httpapi.NewClient(srv.URL, "fpt_short\r\nX-Evil: 1").Me(ctx)
	wantCode(t, err, fieldpass.EINVALID, "malformed token")
	if strings.Contains(err.Error(), "Evil") {
		t.Errorf("error repeats the token: %v", err)
	}
	select {
	case s := <-got:
		t.Errorf("a malformed token reached the server: %+v", s)
	default:
	}
}

func TestClientFailures(t *testing.T) {
	tok := fieldpass.FormatToken([32]byte{5})
	ctx := context.Background()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/me":
			w.WriteHeader(502)
			io.WriteString(w, "<html>bad gateway</html>")
		case "/api/v1/devices":
			io.WriteString(w, "<html>a login page</html>")
		case "/api/v1/grants":
			http.Redirect(w, r, "https://elsewhere.example/steal", http.StatusFound)
		case "/api/v1/audit":
			w.WriteHeader(418)
		}
	}))
	c := httpapi.NewClient(srv.URL, tok)
	_, err := c.Me(ctx)
	wantCode(t, err, fieldpass.EUNAVAILABLE, "502")
	_, err = c.Devices(ctx)
	wantCode(t, err, fieldpass.EINTERNAL, "unexpected answer from the broker")
	_, err = c.Grants(ctx, httpapi.GrantQuery{})
	wantCode(t, err, fieldpass.EINTERNAL, "302")
	_, err = c.Audit(ctx, httpapi.AuditQuery{})
	wantCode(t, err, fieldpass.EINTERNAL, "418")

	// Nobody there.
	addr := srv.Listener.Addr().String()
	srv.Close()
	_, err = c.Me(ctx)
	wantCode(t, err, fieldpass.EUNAVAILABLE, "cannot reach the broker at "+addr)
	if strings.Contains(err.Error(), tok) {
		t.Errorf("error repeats the token: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = c.Me(cctx)
	wantCode(t, err, fieldpass.EUNAVAILABLE, "context canceled")
}
