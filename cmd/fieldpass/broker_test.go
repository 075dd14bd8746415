package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	fpbroker "github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/wgnet"
)

// The CLI against a real API server (apiserver.New) on a real Postgres, as
// its users run it: tokens come from FIELDPASS_TOKEN.

type broker struct {
	db     *postgres.DB
	url    string
	tokens map[string]string // email -> token
}

const (
	admin    = "admin@example.com"
	alice    = "alice@example.com" // engineer
	approver = "approver@example.com"
	auditor  = "auditor@example.com"
)

func newBroker(t *testing.T) *broker {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	b := &broker{db: db, tokens: map[string]string{}}
	api := apiserver.New(apiserver.Config{DB: db, AuthRate: 1e6, AuthBurst: 1e6})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	b.url = srv.URL

	for name, labels := range map[string]map[string]string{"pump-7": {"site": "north"}, "gw-1": {"site": "south"}} {
		tok, _, err := db.CreateEnrollmentToken(ctx, name, labels, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		key, err := wgnet.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Enroll(ctx, tok, key.Public().String(), "v1", func(seq int64) (netip.Addr, error) {
			return fieldpass.TunnelAddress(netip.MustParsePrefix("10.77.0.0/16"), seq)
		}); err != nil {
			t.Fatal(err)
		}
	}
	b.addPeople(t)
	return b
}

// addPeople gives each test person their role and a CLI token.
func (b *broker) addPeople(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for email, role := range map[string]fieldpass.Role{admin: fieldpass.RoleAdmin, alice: fieldpass.RoleEngineer, approver: fieldpass.RoleApprover, auditor: fieldpass.RoleAuditor} {
		if _, err := b.db.EnsureUser(ctx, "operator:test", email, []fieldpass.Role{role}); err != nil {
			t.Fatal(err)
		}
		tok, _, err := b.db.IssueToken(ctx, "operator:test", email, fieldpass.TokenCLI, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		b.tokens[email] = tok
	}
}

// newConnectBroker is newBroker with the whole path a connect takes: a
// broker with its session manager, WireGuard on loopback, and device pump-7
// running a real connector whose service ssh answers in upper case; gw-1 is
// enrolled but has no connector.
func newConnectBroker(t *testing.T) (*broker, *fpbroker.Sessions) {
	t.Helper()
	var m *fpbroker.Sessions
	env := brokertest.New(t, brokertest.WithAPIConfig(func(env *brokertest.Env, cfg *apiserver.Config) {
		m = env.StartSessions(fpbroker.SessionsConfig{})
		cfg.Sessions = m
		cfg.AuthRate, cfg.AuthBurst = 1e6, 1e6
	}))
	b := &broker{db: env.DB, url: env.URL, tokens: map[string]string{}}
	env.StartConnector(env.Enroll("pump-7"), map[string]string{"ssh": brokertest.Service(t, upper)}, nil)
	env.Enroll("gw-1")
	brokertest.WaitFor(t, 20*time.Second, "pump-7 online", func() bool { return env.Broker.Connected("pump-7") })
	b.addPeople(t)
	return b, m
}

// sessions lists every session row, newest first.
func (b *broker) sessions(t *testing.T) []*fieldpass.Session {
	t.Helper()
	ss, err := b.db.Sessions(context.Background(), fieldpass.SessionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

// as runs the CLI as email and checks that no output holds a token.
func (b *broker) as(t *testing.T, email string, args ...string) result {
	t.Helper()
	e, stdout, stderr := b.env(t, email)
	r := runEnv(t, e, stdout, stderr, args...)
	out := r.stdout + r.stderr
	if r.err != nil {
		out += r.err.Error()
	}
	b.checkNoToken(t, out)
	return r
}

// env is the CLI's environment as email, polling quickly.
func (b *broker) env(t *testing.T, email string) (*env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	e, stdout, stderr := testEnv(t, map[string]string{envBroker: b.url, envToken: b.tokens[email]})
	e.sleep = func(ctx context.Context, d time.Duration) error { return sleepCtx(ctx, 20*time.Millisecond) }
	return e, stdout, stderr
}

func (b *broker) checkNoToken(t *testing.T, out string) {
	t.Helper()
	for _, tok := range b.tokens {
		if strings.Contains(out, tok) {
			t.Fatalf("output holds a token:\n%s", out)
		}
	}
}

func mustOK(t *testing.T, r result) result {
	t.Helper()
	if r.err != nil {
		t.Fatalf("exit %d: %s\nstderr:\n%s", r.code, message(r.err), r.stderr)
	}
	return r
}

func mustFail(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != 1 {
		t.Fatalf("exit %d (%v), want 1", r.code, r.err)
	}
	if !strings.Contains(message(r.err), want) {
		t.Fatalf("error %q, want it to contain %q", message(r.err), want)
	}
}

func TestBrokerGrantsAndDevices(t *testing.T) {
	b := newBroker(t)

	r := mustOK(t, b.as(t, alice, "devices"))
	if !strings.HasPrefix(r.stdout, "No device you may reach now.") || !strings.Contains(r.stdout, "fieldpass request create") {
		t.Errorf("alice without grants sees:\n%s", r.stdout)
	}

	before := time.Now()
	r = mustOK(t, b.as(t, admin, "grant", "create", "--user", "Alice@Example.com", "--device", "pump-7",
		"--service", "ssh", "--service", "web", "--duration", "4h", "--reason", "fix the pump", "--ticket", "OPS-1", "--json"))
	var g fieldpass.Grant
	if err := json.Unmarshal([]byte(r.stdout), &g); err != nil {
		t.Fatalf("grant create --json: %v\n%s", err, r.stdout)
	}
	if g.Subject != alice || strings.Join(g.Services, ",") != "ssh,web" || g.Ticket != "OPS-1" ||
		g.End.Before(before.Add(4*time.Hour-time.Second)) || g.End.After(time.Now().Add(4*time.Hour+time.Second)) {
		t.Errorf("created grant: %+v", g)
	}

	until := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	r = mustOK(t, b.as(t, admin, "grant", "create", "--user", "vendor@acme.example", "--label", "site=south",
		"--service", "ssh", "--until", until.Format(time.RFC3339), "--reason", "vendor visit"))
	if !strings.Contains(r.stdout, "vendor@acme.example may reach site=south (ssh) until "+until.Format(time.RFC3339)) {
		t.Errorf("grant create says:\n%s", r.stdout)
	}

	r = mustOK(t, b.as(t, alice, "devices"))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "pump-7") || !strings.HasSuffix(lines[1], "ssh,web") || !strings.Contains(lines[1], ts(g.End)) {
		t.Errorf("alice's devices:\n%s", r.stdout)
	}
	r = mustOK(t, b.as(t, alice, "devices", "--json"))
	var devs []httpapi.DeviceView
	if err := json.Unmarshal([]byte(r.stdout), &devs); err != nil || len(devs) != 1 || devs[0].Name != "pump-7" {
		t.Errorf("devices --json: %v\n%s", err, r.stdout)
	}

	// Only admins create grants: the broker's message, exit 1.
	r = b.as(t, alice, "grant", "create", "--user", alice, "--device", "gw-1", "--service", "ssh", "--duration", "1h", "--reason", "me")
	if r.code != 1 || message(r.err) == "" || strings.Contains(message(r.err), "internal") {
		t.Errorf("alice creating a grant: exit %d, %v", r.code, r.err)
	}
	// The broker's own validation comes through as its message.
	mustFail(t, b.as(t, admin, "grant", "create", "--user", "not-an-email", "--device", "gw-1", "--service", "ssh", "--duration", "1h", "--reason", "x"), "email")

	r = mustOK(t, b.as(t, admin, "grant", "list"))
	if !strings.Contains(r.stdout, g.ID) || !strings.Contains(r.stdout, "site=south") || !strings.Contains(r.stdout, "[OPS-1] fix the pump") {
		t.Errorf("grant list:\n%s", r.stdout)
	}
	r = mustOK(t, b.as(t, alice, "grant", "list", "--json"))
	var gs []fieldpass.Grant
	if err := json.Unmarshal([]byte(r.stdout), &gs); err != nil || len(gs) != 1 || gs[0].ID != g.ID {
		t.Errorf("alice's grant list --json: %v\n%s", err, r.stdout)
	}

	mustOK(t, b.as(t, admin, "grant", "revoke", g.ID, "--reason", "pump replaced"))
	r = mustOK(t, b.as(t, admin, "grant", "list", "--user", alice))
	if !strings.Contains(r.stdout, "revoked: pump replaced") {
		t.Errorf("after revoke:\n%s", r.stdout)
	}
	r = mustOK(t, b.as(t, admin, "grant", "list", "--user", alice, "--json"))
	if err := json.Unmarshal([]byte(r.stdout), &gs); err != nil || len(gs) != 1 || gs[0].RevokeReason != "pump replaced" {
		t.Errorf("grant list --json after revoke: %v\n%s", err, r.stdout)
	}
	evs, err := b.db.AuditEvents(context.Background(), fieldpass.AuditFilter{Action: fieldpass.AuditGrantRevoke})
	if err != nil || len(evs) != 1 || evs[0].Details["reason"] != "pump replaced" || evs[0].Actor != fieldpass.UserActor(admin) {
		t.Errorf("grant.revoke audit events: %+v, %v", evs, err)
	}
	mustFail(t, b.as(t, admin, "grant", "revoke", "no-such-grant"), "")
	r = mustOK(t, b.as(t, alice, "devices"))
	if strings.Contains(r.stdout, "pump-7") {
		t.Errorf("alice still sees pump-7 after the revoke:\n%s", r.stdout)
	}
}

func TestBrokerRequests(t *testing.T) {
	b := newBroker(t)

	// --wait, approved by someone else: says who and when.
	e, _, _ := b.env(t, alice)
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	e.stdout, e.stderr = outW, errW
	done := make(chan error, 1)
	var stdout strings.Builder
	go func() {
		err := e.run(context.Background(), []string{"request", "create", "--device", "gw-1", "--service", "web",
			"--duration", "90m", "--reason", "check the config", "--ticket", "OPS-7", "--wait"})
		outW.Close()
		errW.Close()
		done <- err
	}()
	line, err := bufio.NewReader(errR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, errR)
	fields := strings.Fields(line) // Created request ID for ...
	if len(fields) < 3 || fields[0] != "Created" {
		t.Fatalf("request create --wait says %q", line)
	}
	id := fields[2]
	stdoutDone := make(chan struct{})
	go func() { io.Copy(&stdout, outR); close(stdoutDone) }()

	r := mustOK(t, b.as(t, approver, "request", "list", "--status", "pending"))
	if !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "[OPS-7] check the config") || !strings.Contains(r.stdout, "1h30m") {
		t.Errorf("approver's request list:\n%s", r.stdout)
	}
	mustFail(t, b.as(t, alice, "request", "approve", id), "")
	r = mustOK(t, b.as(t, approver, "request", "approve", id))
	if !strings.Contains(r.stdout, "Approved request "+id) {
		t.Errorf("approve says %q", r.stdout)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("request create --wait: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request create --wait did not see the approval")
	}
	<-stdoutDone
	if !strings.Contains(stdout.String(), "approved by "+approver+" at ") {
		t.Errorf("--wait says %q", stdout.String())
	}
	r = mustOK(t, b.as(t, alice, "devices"))
	if !strings.Contains(r.stdout, "gw-1") {
		t.Errorf("approved request gave no access:\n%s", r.stdout)
	}
	mustFail(t, b.as(t, approver, "request", "approve", id), "")

	// Denied: --wait exits 1 naming who denied it.
	e, _, _ = b.env(t, alice)
	var out, errb syncBuffer
	e.stdout, e.stderr = &out, &errb
	done2 := make(chan error, 1)
	go func() {
		done2 <- e.run(context.Background(), []string{"request", "create", "--device", "pump-7", "--service", "ssh",
			"--duration", "1h", "--reason", "again", "--wait"})
	}()
	var id2 string
	for i := 0; id2 == "" && i < 500; i++ {
		if f := strings.Fields(errb.String()); len(f) > 2 {
			id2 = f[2]
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustOK(t, b.as(t, approver, "request", "deny", id2, "--reason", "wait for the maintenance window"))
	select {
	case err := <-done2:
		if exitCode(err) != 1 || !strings.Contains(message(err), "denied by "+approver) || !strings.Contains(message(err), ": wait for the maintenance window") {
			t.Fatalf("denied --wait: %v (exit %d)", err, exitCode(err))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request create --wait did not see the denial")
	}

	r = mustOK(t, b.as(t, alice, "request", "list"))
	if !strings.Contains(r.stdout, approver+": wait for the maintenance window") {
		t.Errorf("alice's request list does not say why it was denied:\n%s", r.stdout)
	}
	evs, err := b.db.AuditEvents(context.Background(), fieldpass.AuditFilter{Action: fieldpass.AuditRequestDeny})
	if err != nil || len(evs) != 1 || evs[0].Details["comment"] != "wait for the maintenance window" {
		t.Errorf("request.deny audit events: %+v, %v", evs, err)
	}
	r = mustOK(t, b.as(t, alice, "request", "list", "--json"))
	var rs []fieldpass.AccessRequest
	if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil || len(rs) != 2 {
		t.Fatalf("request list --json: %v\n%s", err, r.stdout)
	}
}

func TestBrokerSessionsAndAudit(t *testing.T) {
	b := newBroker(t)
	ctx := context.Background()
	g, err := b.db.CreateGrant(ctx, "operator:test", fieldpass.Grant{Subject: alice, Devices: []string{"pump-7"}, Services: []string{"ssh"},
		Start: time.Now().Add(-time.Minute), End: time.Now().Add(time.Hour), Reason: "work"}, fieldpass.HardMaxGrantDuration)
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.db.OpenSession(ctx, fieldpass.Session{User: alice, Device: "pump-7", Service: "ssh", GrantID: g.ID, ClientAddr: "127.0.0.1:5555", BrokerID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.EndSession(ctx, s.ID, time.Time{}, 123, 4567, fieldpass.EndGrantRevoked); err != nil {
		t.Fatal(err)
	}

	r := mustOK(t, b.as(t, auditor, "sessions", "--csv", "--device", "pump-7", "--since", "1h"))
	recs, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil || len(recs) != 2 {
		t.Fatalf("sessions --csv: %v\n%s", err, r.stdout)
	}
	row := recs[1]
	if strings.Join(recs[0], ",") != strings.Join(fieldpass.SessionCSVHeader, ",") || row[0] != s.ID || row[1] != alice || row[4] != g.ID ||
		row[8] != "123" || row[9] != "4567" || row[10] != "grant_revoked" {
		t.Errorf("sessions --csv row %q", row)
	}
	for _, col := range []int{6, 7} {
		if _, err := time.Parse(time.RFC3339, row[col]); err != nil {
			t.Errorf("column %s %q is not RFC 3339", recs[0][col], row[col])
		}
	}
	r = mustOK(t, b.as(t, alice, "sessions", "--json"))
	var ss []fieldpass.Session
	if err := json.Unmarshal([]byte(r.stdout), &ss); err != nil || len(ss) != 1 || ss[0].BytesOut != 4567 {
		t.Errorf("alice's sessions --json: %v\n%s", err, r.stdout)
	}
	r = mustOK(t, b.as(t, auditor, "sessions", "--since", time.Now().Add(time.Minute).UTC().Format(time.RFC3339)))
	if strings.Contains(r.stdout, s.ID) {
		t.Errorf("--since in the future still lists the session:\n%s", r.stdout)
	}

	r = mustOK(t, b.as(t, auditor, "audit", "--action", "session.end", "--csv"))
	recs, err = csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil || len(recs) != 2 || recs[1][3] != "session.end" || recs[1][4] != "session:"+s.ID || !strings.Contains(recs[1][5], "grant_revoked") {
		t.Fatalf("audit --csv: %v\n%s", err, r.stdout)
	}
	r = mustOK(t, b.as(t, auditor, "audit", "--since", "1h", "--json"))
	var evs []struct { // the wire: snake_case, hashes in hex
		Seq      int64  `json:"seq"`
		PrevHash string `json:"prev_hash"`
		Hash     string `json:"hash"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &evs); err != nil || len(evs) < 4 {
		t.Fatalf("audit --json: %v\n%s", err, r.stdout)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq || evs[i].PrevHash != evs[i-1].Hash {
			t.Errorf("audit --json: events %d and %d do not chain", evs[i-1].Seq, evs[i].Seq)
		}
	}
	r = mustOK(t, b.as(t, auditor, "audit", "--actor", "user:"+alice))
	if !strings.Contains(r.stdout, "session.start") {
		t.Errorf("audit --actor:\n%s", r.stdout)
	}
	mustFail(t, b.as(t, alice, "audit"), "")
}

// TestBrokerConnect: proxy and forward through the real connect endpoint
// and client, the broker's session manager and a real connector.
func TestBrokerConnect(t *testing.T) {
	b, m := newConnectBroker(t)
	ctx := context.Background()
	if _, err := b.db.CreateGrant(ctx, "operator:test", fieldpass.Grant{Subject: alice, Devices: []string{"pump-7"}, Services: []string{"ssh"},
		Start: time.Now().Add(-time.Minute), End: time.Now().Add(time.Hour), Reason: "work"}, fieldpass.HardMaxGrantDuration); err != nil {
		t.Fatal(err)
	}

	// Refused: the broker's reason, nothing opened.
	mustFail(t, b.as(t, alice, "proxy", "gw-1", "ssh"), "no grant covers gw-1/ssh for "+alice)
	if len(b.sessions(t)) != 0 {
		t.Fatal("a refused connect opened a session")
	}

	e, _, _ := b.env(t, alice)
	var out syncBuffer
	e.stdin, e.stdout = strings.NewReader("hello"), &out
	if err := e.run(ctx, []string{"proxy", "pump-7", "ssh"}); err != nil {
		t.Fatalf("proxy: %v", err)
	}
	if out.String() != "HELLO" {
		t.Errorf("proxy carried %q, want HELLO", out.String())
	}

	// forward: one session, a stream per connection, the cut reported.
	e, _, _ = b.env(t, alice)
	outR, outW := io.Pipe()
	e.stdout = outW
	done := make(chan error, 1)
	go func() { done <- e.run(ctx, []string{"forward", "pump-7", "ssh"}); outW.Close() }()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, outR)
	addr := strings.Fields(line)[1]
	for _, msg := range []string{"a", "b"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(msg))
		c.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != strings.ToUpper(msg) {
			t.Fatalf("forward carried %q, want %q", got, strings.ToUpper(msg))
		}
	}
	ss := b.sessions(t)
	if len(ss) != 2 { // the proxy's and the forward's
		t.Fatalf("%d sessions opened, want 2 (one for all forwarded connections)", len(ss))
	}
	if !m.EndSession(ss[0].ID, fieldpass.EndGrantExpired) {
		t.Fatal("the forward's session is not live")
	}
	select {
	case err := <-done:
		if err == nil || message(err) != "session ended: grant_expired" {
			t.Fatalf("forward after the cut: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("forward did not stop when the session was cut")
	}
}

// TestBrokerLogoutRevokes: logout revokes the saved token at the broker,
// not only on this machine.
func TestBrokerLogoutRevokes(t *testing.T) {
	b := newBroker(t)
	tok := b.tokens[alice]
	e, stdout, stderr := testEnv(t, nil)
	if _, err := e.saveConfig(savedConfig{Broker: b.url, Token: tok, Email: alice, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r := runEnv(t, e, stdout, stderr, "logout")
	mustOK(t, r)
	if r.stderr != "" {
		t.Fatalf("logout warned: %s", r.stderr)
	}
	if _, _, err := b.db.Authenticate(context.Background(), tok); fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN {
		t.Fatalf("token after logout: err %v, want forbidden (revoked)", err)
	}
	saved, err := e.loadConfig()
	if err != nil || saved.Token != "" || saved.Broker != b.url {
		t.Fatalf("config after logout: %+v, %v; want the broker kept and no token", saved, err)
	}
}

func TestBrokerHistoryAndStaleReport(t *testing.T) {
	b := newBroker(t)
	ctx := context.Background()
	dev, err := b.db.Device(ctx, "pump-7")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for _, ev := range []fieldpass.DeviceEvent{
		{DeviceID: dev.ID, At: now.Add(-48 * time.Hour), Kind: fieldpass.DeviceOnline, Endpoint: "192.0.2.1:51820", ConnectorVersion: "v0.9", BrokerID: "b1"},
		{DeviceID: dev.ID, At: now.Add(-2 * time.Hour), Kind: fieldpass.DeviceOnline, Endpoint: "192.0.2.1:51820", ConnectorVersion: "v1", BrokerID: "b1"},
		{DeviceID: dev.ID, At: now.Add(-time.Hour), Kind: fieldpass.DeviceEndpointChanged, Endpoint: "198.51.100.7:4242", PreviousEndpoint: "192.0.2.1:51820", BrokerID: "b1"},
	} {
		if err := b.db.RecordDeviceEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}

	// The default window is 24h: the oldest event is left out.
	r := mustOK(t, b.as(t, auditor, "devices", "history", "pump-7"))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "TIME KIND ENDPOINT VERSION BROKER" {
		t.Fatalf("devices history:\n%s", r.stdout)
	}
	if got := strings.Join(strings.Fields(lines[1]), " "); got != ts(now.Add(-time.Hour))+" endpoint_changed 192.0.2.1:51820 -> 198.51.100.7:4242 - b1" {
		t.Errorf("newest row: %q", got)
	}
	if got := strings.Join(strings.Fields(lines[2]), " "); got != ts(now.Add(-2*time.Hour))+" online 192.0.2.1:51820 v1 b1" {
		t.Errorf("second row: %q", got)
	}
	r = mustOK(t, b.as(t, auditor, "devices", "history", "pump-7", "--since", "7d", "--json"))
	var evs []fieldpass.DeviceEvent
	if err := json.Unmarshal([]byte(r.stdout), &evs); err != nil || len(evs) != 3 || evs[2].ConnectorVersion != "v0.9" {
		t.Errorf("history --since 7d --json: %v\n%s", err, r.stdout)
	}
	r = mustOK(t, b.as(t, auditor, "devices", "history", "--limit", "1", "pump-7", "--json"))
	if err := json.Unmarshal([]byte(r.stdout), &evs); err != nil || len(evs) != 1 || evs[0].Kind != fieldpass.DeviceEndpointChanged {
		t.Errorf("history --limit 1: %v\n%s", err, r.stdout)
	}
	r = mustOK(t, b.as(t, auditor, "devices", "history", "gw-1", "--json"))
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("history of a device without events: %q", r.stdout)
	}
	mustFail(t, b.as(t, auditor, "devices", "history", "no-such-device"), "no-such-device")
	mustFail(t, b.as(t, alice, "devices", "history", "pump-7"), "needs the auditor or admin role")

	// An unused grant shows up with the command that revokes it.
	r = mustOK(t, b.as(t, admin, "grant", "create", "--user", alice, "--device", "gw-1", "--service", "ssh",
		"--duration", "1h", "--reason", "never used", "--json"))
	var g fieldpass.Grant
	if err := json.Unmarshal([]byte(r.stdout), &g); err != nil {
		t.Fatal(err)
	}
	r = mustOK(t, b.as(t, auditor, "report", "stale"))
	for _, want := range []string{
		"Devices not seen for 30d: 0",
		"Devices with no session for 90d: 0",
		"Grants never used: 1",
		"fieldpass grant revoke " + g.ID,
		"Vendor accounts with no live grant:",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("report stale lacks %q:\n%s", want, r.stdout)
		}
	}
	r = mustOK(t, b.as(t, auditor, "report", "stale", "--not-seen", "36h", "--no-session", "7d", "--json"))
	var rep fieldpass.StaleReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report stale --json: %v\n%s", err, r.stdout)
	}
	if rep.Options.NotSeenSeconds != 36*3600 || rep.Options.NoSessionSeconds != 7*24*3600 ||
		len(rep.UnusedGrants) != 1 || rep.UnusedGrants[0].Command != "fieldpass grant revoke "+g.ID {
		t.Errorf("report stale --json: %+v", rep)
	}
	mustFail(t, b.as(t, alice, "report", "stale"), "needs the auditor or admin role")

	// Help and bad flags.
	r = b.as(t, alice, "devices", "history", "-h")
	if r.code != 0 || !strings.Contains(r.stdout, "connectivity history") || !strings.Contains(r.stdout, "-limit") {
		t.Errorf("devices history -h: exit %d\n%s", r.code, r.stdout)
	}
	r = b.as(t, alice, "report", "stale", "-h")
	if r.code != 0 || !strings.Contains(r.stdout, "-not-seen") {
		t.Errorf("report stale -h: exit %d\n%s", r.code, r.stdout)
	}
	if r = b.as(t, auditor, "report", "stale", "--not-seen", "soon"); r.code != 2 {
		t.Errorf("report stale --not-seen soon: exit %d, want 2", r.code)
	}
	if r = b.as(t, auditor, "devices", "history"); r.code != 2 {
		t.Errorf("devices history without NAME: exit %d, want 2", r.code)
	}
}

// TestBrokerSessionEnd: an admin ends a session from the command line,
// with a reason that reaches the audit log; others may not. A person with
// no device is told how to ask for one.
func TestBrokerSessionEnd(t *testing.T) {
	b := newBroker(t)
	ctx := context.Background()
	g, err := b.db.CreateGrant(ctx, "operator:test", fieldpass.Grant{Subject: alice, Devices: []string{"pump-7"}, Services: []string{"ssh"},
		Start: time.Now().Add(-time.Minute), End: time.Now().Add(time.Hour), Reason: "work"}, fieldpass.HardMaxGrantDuration)
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.db.OpenSession(ctx, fieldpass.Session{User: alice, Device: "pump-7", Service: "ssh", GrantID: g.ID, ClientAddr: "127.0.0.1:5555", BrokerID: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	mustFail(t, b.as(t, alice, "sessions", "end", s.ID), "admin")
	r := mustOK(t, b.as(t, admin, "sessions", "end", s.ID, "--reason", "INC-9 stray session"))
	if !strings.Contains(r.stdout, "Ended session "+s.ID) || !strings.Contains(r.stdout, "ended_by_admin") {
		t.Errorf("sessions end said %q", r.stdout)
	}
	evs, err := b.db.AuditEvents(ctx, fieldpass.AuditFilter{Action: fieldpass.AuditSessionEndAsked})
	if err != nil || len(evs) != 1 || !strings.Contains(fmt.Sprint(evs[0].Details), "INC-9 stray session") {
		t.Errorf("session.end_asked events: %+v, %v; want one with the reason", evs, err)
	}

	r = mustOK(t, b.as(t, approver, "devices"))
	if !strings.Contains(r.stdout, "fieldpass request create") {
		t.Errorf("devices with no grant printed %q, want a hint to request access", r.stdout)
	}
}
