//go:build linux

package e2e_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

const vendorEmail = "vendor@acme.example"

// TestAccess is the product's promise with real parts: a vendor logs in
// through an OpenID provider, reaches nothing without a grant, runs a
// command on a device's real sshd through `fieldpass ssh` within one, and
// is cut off when the grant expires or is revoked; an auditor sees every
// session with its bytes and end, and the audit chain checks out until a
// database superuser rewrites a row.
//
// The parts: mockoidc in this process (the broker subprocess discovers it
// and exchanges codes with it), fieldpass-broker with that provider and a
// role map, a connector exposing ssh, OpenSSH's sshd on a loopback port
// with its own host key and config, and the OpenSSH client. Between the
// connector and sshd sits a counting relay (tap), so the test knows how many
// connections reached sshd and exactly what each carried.
func TestAccess(t *testing.T) {
	needOpenSSH(t)
	t.Parallel()
	// step runs one part of the story; the rest needs it to have passed.
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	provider := startIDP(t)
	b := startBrokerWith(t, provider.brokerFlags("admin=fp-admins", "approver=fp-admins", "engineer=field-eng", "auditor=fp-audit")...)
	sshd := startSSHD(t)
	tp := startTap(t, sshd.addr)
	startConnector(t, "pump-7", b.enroll("pump-7"), "--service", "ssh="+tp.addr())
	b.waitDevice("pump-7", 20*time.Second, "online", isOnline)

	admin := b.tokenPerson("admin@example.com", fieldpass.RoleAdmin)
	auditor := b.tokenPerson("auditor@example.com", fieldpass.RoleAuditor)
	vendorConfig := t.TempDir()
	vendor := person{name: "vendor", env: env("XDG_CONFIG_HOME=" + vendorConfig)}
	dest := sshd.user + "@pump-7"
	ssh := func(command string) []string {
		return append(append([]string{"ssh", dest, "--"}, sshd.clientOptions()...), command)
	}
	known := map[string]bool{} // sessions already accounted for

	step("vendor logs in through the identity provider", func(t *testing.T) {
		out := cliLogin(t, provider, b.URL(), vendor.env, &mockoidc.MockUser{
			Subject: "acme-17", Email: "Vendor@Acme.example", EmailVerified: true, // no groups: a vendor
		})
		want := fmt.Sprintf("Logged in to %s as %s (no role: grants made out to you only)", b.URL(), vendorEmail)
		if !strings.HasPrefix(out, want) {
			t.Errorf("login printed %q, want %q...", out, want)
		}
		path := filepath.Join(vendorConfig, "fieldpass", "config.json")
		for p, mode := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700 | os.ModeDir} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != mode {
				t.Errorf("%s: mode %v, want %v", p, fi.Mode(), mode)
			}
		}
		if devs := decode[[]httpapi.DeviceView](t, vendor.mustRun(t, "devices", "--json")); len(devs) != 0 {
			t.Errorf("without a grant the vendor sees devices: %+v", devs)
		}
	})

	step("no grant, no connection", func(t *testing.T) {
		r := vendor.run(t, ssh("echo should-not-run")...)
		if r.code == 0 || strings.Contains(r.stdout, "should-not-run") || !strings.Contains(r.stderr, "no grant covers pump-7/ssh for "+vendorEmail) {
			t.Errorf("%v\nwant ssh to fail with the broker's reason: no grant", r)
		}
		// fieldpass says it, once, and ssh never starts to add its own.
		if strings.Contains(r.stderr, "kex_exchange_identification") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("stderr %q: want the refusal on one line, before OpenSSH says anything", r.stderr)
		}
		if n, m := tp.count(), sshd.connections(); n != 0 || m != 0 {
			t.Errorf("%d connections reached the device's ssh service, sshd logged %d; want none", n, m)
		}
		if ss := auditor.sessions(t); len(ss) != 0 {
			t.Errorf("a refused connect left session rows: %+v", ss)
		}
	})

	var grant *fieldpass.Grant
	step("within a grant a command runs on the device", func(t *testing.T) {
		grant = admin.grant(t, "--duration", "25s", "--reason", "firmware update", "--ticket", "OPS-1234")
		devs := decode[[]httpapi.DeviceView](t, vendor.mustRun(t, "devices", "--json"))
		if len(devs) != 1 || devs[0].Name != "pump-7" || !devs[0].Online || !devs[0].GrantEnds.Equal(grant.End) || !slices.Equal(devs[0].Services, []string{"ssh"}) {
			t.Errorf("vendor's devices: %+v; want pump-7 online, ssh until %s", devs, grant.End)
		}
		r := vendor.run(t, ssh("echo hello-from-device")...)
		if r.code != 0 || r.stdout != "hello-from-device\n" {
			t.Fatalf("%v\nwant hello-from-device", r)
		}
		s := auditor.waitSession(t, "the echo session ended", func(s fieldpass.Session) bool { return !known[s.ID] && !s.Open() })
		known[s.ID] = true
		checkSession(t, s, grant.ID, fieldpass.EndClientClosed)
		in, out := tp.bytes(t, 0, 1)
		checkBytes(t, "echo session", s, in, out)
	})

	step("the grant expires mid-session", func(t *testing.T) {
		long := startCmd(t, vendor.env, bins.cli, ssh("echo started; exec sleep 120")...)
		long.waitOutput(t, 15*time.Second, regexp.MustCompile(`^started\n`))
		s := auditor.waitSession(t, "the long session open", func(s fieldpass.Session) bool { return !known[s.ID] && s.Open() })
		known[s.ID] = true
		if left := time.Until(grant.End); left < 3*time.Second {
			t.Fatalf("only %s of the grant left when the long command started: the setup was too slow", left)
		}

		// Meanwhile, a port forward: one session, two ssh connections in it.
		t.Run("forward carries two connections in one session", func(t *testing.T) {
			from := tp.count()
			fw := startCmd(t, vendor.env, bins.cli, "forward", "pump-7", "ssh")
			m := fw.waitOutput(t, 15*time.Second, regexp.MustCompile(`^forwarding (127\.0\.0\.1:(\d+)) to pump-7/ssh\n`))
			for i := 1; i <= 2; i++ {
				args := append(sshd.clientOptions(), "-p", m[2], sshd.user+"@127.0.0.1", fmt.Sprintf("echo forwarded-%d", i))
				r := runCmd(t, env(), "ssh", args...)
				if r.code != 0 || r.stdout != fmt.Sprintf("forwarded-%d\n", i) {
					t.Errorf("connection %d through %s: %v", i, m[1], r)
				}
			}
			fw.cmd.Process.Signal(os.Interrupt)
			fw.wait(t, 10*time.Second)
			if fw.code != 0 {
				t.Errorf("forward, interrupted: exit %d, stderr %q", fw.code, fw.stderr)
			}
			fs := auditor.waitSession(t, "the forward session ended", func(s fieldpass.Session) bool { return !known[s.ID] && !s.Open() })
			known[fs.ID] = true
			checkSession(t, fs, grant.ID, fieldpass.EndClientClosed)
			if n := tp.count() - from; n != 2 {
				t.Errorf("%d connections reached sshd through the forward, want 2", n)
			}
			in, out := tp.bytes(t, from, from+2)
			checkBytes(t, "forward session (two connections)", fs, in, out)
			// The echo, the long one still open, and one for both forwarded
			// connections.
			if ss := auditor.sessions(t); len(ss) != 3 {
				t.Errorf("%d sessions after the forward, want 3: %+v", len(ss), ss)
			}
		})

		long.wait(t, time.Until(grant.End)+10*time.Second)
		cut := long.exitAt.Sub(grant.End)
		t.Logf("ssh exited %s after the grant's end (status %d)", cut.Round(time.Millisecond), long.code)
		if long.code == 0 || cut < -50*time.Millisecond || cut > 3*time.Second {
			t.Errorf("ssh exited with status %d, %s after the grant's end; want non-zero within a few seconds after", long.code, cut)
		}
		if !strings.Contains(long.stderr.String(), "grant_expired") {
			t.Errorf("ssh's stderr does not say why: %q", long.stderr)
		}
		s = auditor.waitSession(t, "the long session ended", func(e fieldpass.Session) bool { return e.ID == s.ID && !e.Open() })
		checkSession(t, s, grant.ID, fieldpass.EndGrantExpired)
		t.Logf("session row ended %s after the grant's end", s.End.Sub(grant.End).Round(time.Millisecond))
		if d := s.End.Sub(grant.End); d < 0 || d > time.Second {
			t.Errorf("session ended %s after the grant's end, want within a second", d)
		}
		in, out := tp.bytes(t, 1, 2)
		checkBytes(t, "expired session", s, in, out)

		r := vendor.run(t, ssh("echo should-not-run")...)
		if r.code == 0 || !strings.Contains(r.stderr, "your grant for pump-7/ssh expired at") {
			t.Errorf("%v\nwant a refusal: grant expired", r)
		}
	})

	var revoked *fieldpass.Grant
	step("a revoke cuts a live session", func(t *testing.T) {
		g := admin.grant(t, "--duration", "10m", "--reason", "commissioning")
		from := tp.count()
		live := startCmd(t, vendor.env, bins.cli, ssh("echo started; exec sleep 120")...)
		live.waitOutput(t, 15*time.Second, regexp.MustCompile(`^started\n`))
		s := auditor.waitSession(t, "the session open", func(s fieldpass.Session) bool { return !known[s.ID] && s.Open() })
		known[s.ID] = true

		start := time.Now()
		if out := admin.mustRun(t, "grant", "revoke", g.ID); out != fmt.Sprintf("Revoked grant %s (%s on pump-7).\n", g.ID, vendorEmail) {
			t.Errorf("revoke printed %q", out)
		}
		live.wait(t, 10*time.Second)
		if live.code == 0 || !strings.Contains(live.stderr.String(), "grant_revoked") {
			t.Errorf("ssh exited with status %d, stderr %q; want non-zero, saying grant_revoked", live.code, live.stderr)
		}
		for _, gg := range decode[[]*fieldpass.Grant](t, admin.mustRun(t, "grant", "list", "--json")) {
			if gg.ID == g.ID {
				revoked = gg
			}
		}
		if revoked == nil || revoked.RevokedAt.IsZero() || revoked.RevokedBy != "user:admin@example.com" {
			t.Fatalf("grant list shows the revoked grant as %+v", revoked)
		}
		// The clock starts when the revocation is on the record, not when
		// the revoke command exits: a binary built with -race sleeps a
		// second at exit (the race detector's atexit_sleep_ms).
		s = auditor.waitSession(t, "the session ended", func(e fieldpass.Session) bool { return e.ID == s.ID && !e.Open() })
		checkSession(t, s, g.ID, fieldpass.EndGrantRevoked)
		rowCut, sshCut := s.End.Sub(revoked.RevokedAt), live.exitAt.Sub(revoked.RevokedAt)
		t.Logf("after the revocation (revoked_at): session row ended %s later, ssh exited %s later (%s after `grant revoke` started)",
			rowCut.Round(time.Millisecond), sshCut.Round(time.Millisecond), live.exitAt.Sub(start).Round(time.Millisecond))
		if rowCut < 0 || rowCut > time.Second || sshCut < 0 || sshCut > time.Second {
			t.Errorf("session row ended %s and ssh exited %s after the revocation; want both within a second", rowCut, sshCut)
		}
		in, out := tp.bytes(t, from, from+1)
		checkBytes(t, "revoked session", s, in, out)

		r := vendor.run(t, ssh("echo should-not-run")...)
		if r.code == 0 || !strings.Contains(r.stderr, "your grant for pump-7/ssh was revoked at") {
			t.Errorf("%v\nwant a refusal: grant revoked", r)
		}
		if n, m := tp.count(), sshd.connections(); n != 5 || m != 5 {
			t.Errorf("%d connections reached the device's ssh service and sshd logged %d; want 5 (echo, expired, two forwarded, revoked)", n, m)
		}
	})

	step("the auditor sees all of it", func(t *testing.T) {
		ss := auditor.sessions(t)
		byID := map[string]fieldpass.Session{}
		reasons := map[fieldpass.EndReason]int{}
		for _, s := range ss {
			byID[s.ID] = s
			reasons[s.EndReason]++
			if s.User != vendorEmail || s.Device != "pump-7" || s.Service != "ssh" || s.Open() || s.BytesIn < 500 || s.BytesOut < 500 {
				t.Errorf("session %+v: want the vendor's ended ssh session on pump-7 with hundreds of bytes each way", s)
			}
		}
		want := map[fieldpass.EndReason]int{fieldpass.EndClientClosed: 2, fieldpass.EndGrantExpired: 1, fieldpass.EndGrantRevoked: 1}
		if len(ss) != len(known) || !maps.Equal(reasons, want) {
			t.Errorf("%d sessions ending %v; want %d ending %v", len(ss), reasons, len(known), want)
		}

		rows, err := csv.NewReader(strings.NewReader(auditor.mustRun(t, "sessions", "--csv"))).ReadAll()
		if err != nil || len(rows) != len(ss)+1 {
			t.Fatalf("sessions --csv: %d rows, %v; want a header and %d sessions", len(rows), err, len(ss))
		}
		col := map[string]int{}
		for i, h := range rows[0] {
			col[h] = i
		}
		for _, row := range rows[1:] {
			s, ok := byID[row[col["id"]]]
			got := []string{row[col["user"]], row[col["device"]], row[col["service"]], row[col["bytes_in"]], row[col["bytes_out"]], row[col["end_reason"]]}
			want := []string{s.User, s.Device, s.Service, strconv.FormatInt(s.BytesIn, 10), strconv.FormatInt(s.BytesOut, 10), string(s.EndReason)}
			if !ok || !slices.Equal(got, want) {
				t.Errorf("sessions --csv row %q; --json has %+v", row, s)
			}
		}

		evs := decode[[]auditEvent](t, auditor.mustRun(t, "audit", "--json"))
		count := map[string]int{}
		for _, e := range evs {
			count[e.Action+" "+e.Actor]++
			if e.Action != fieldpass.AuditSessionEnd {
				continue
			}
			s, ok := byID[strings.TrimPrefix(e.Target, "session:")]
			if !ok || e.Details["reason"] != string(s.EndReason) || e.Details["bytes_in"] != float64(s.BytesIn) || e.Details["bytes_out"] != float64(s.BytesOut) {
				t.Errorf("audit event %d %s %s %v does not match the session row %+v", e.Seq, e.Action, e.Target, e.Details, s)
			}
		}
		for what, n := range map[string]int{
			"user.login user:" + vendorEmail:                     2, // the portal session, then the CLI's token
			"grant.create user:admin@example.com":                2,
			"grant.revoke user:admin@example.com":                1,
			fieldpass.AuditSessionStart + " user:" + vendorEmail: 4,
			fieldpass.AuditSessionEnd + " broker:" + brokerID:    4,
		} {
			if count[what] != n {
				t.Errorf("audit log holds %d %q events, want %d; all: %v", count[what], what, n, count)
			}
		}

		checkOneLineError(t, vendor.run(t, "audit"), "fieldpass: ", "role")
		checkOneLineError(t, auditor.run(t, "grant", "create", "--user", vendorEmail, "--device", "pump-7", "--service", "ssh", "--duration", "1h", "--reason", "x"), "fieldpass: ", "role")
	})

	step("audit verify passes, and fails once a superuser rewrites a row", func(t *testing.T) {
		out := b.mustCLI("audit", "verify", "--database-url", b.dbURL)
		if !regexp.MustCompile(`^audit chain intact: \d+ events\n$`).MatchString(out) {
			t.Errorf("audit verify printed %q", out)
		}
		// Rewrite the record of the revoked session as an ordinary close.
		var seq int64
		for _, e := range decode[[]auditEvent](t, auditor.mustRun(t, "audit", "--json", "--action", fieldpass.AuditSessionEnd)) {
			if e.Details["reason"] == string(fieldpass.EndGrantRevoked) {
				seq = e.Seq
			}
		}
		if seq == 0 {
			t.Fatal("no session.end event with reason grant_revoked")
		}
		su := superuserConn(t, b.dbURL)
		const rewrite = `UPDATE audit_events SET details = jsonb_set(details, '{reason}', '"client_closed"') WHERE seq = $1`
		if _, err := su.Exec(t.Context(), rewrite, seq); err == nil {
			t.Fatal("the database let even a superuser UPDATE an audit event with its triggers on")
		}
		for _, q := range []string{"ALTER TABLE audit_events DISABLE TRIGGER USER", rewrite, "ALTER TABLE audit_events ENABLE TRIGGER USER"} {
			var args []any
			if q == rewrite {
				args = append(args, seq)
			}
			if _, err := su.Exec(t.Context(), q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		r := b.cli("audit", "verify", "--database-url", b.dbURL)
		want := fmt.Sprintf("audit chain broken at seq %d", seq)
		if r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Errorf("%v\nwant a failure naming the rewritten event: %q", r, want)
		}
		t.Logf("after rewriting seq %d: %s", seq, strings.TrimSpace(r.stderr))
	})
}

// person runs the fieldpass CLI as someone: from a saved login
// (XDG_CONFIG_HOME) or with FIELDPASS_BROKER and FIELDPASS_TOKEN.
type person struct {
	name string
	env  []string
	ns   netns // where the CLI runs: "" for the test's own namespace
}

// tokenPerson issues an automation token for a new user with role and
// returns them, the CLI pointed at this broker.
func (b *broker) tokenPerson(email string, role fieldpass.Role) person {
	b.t.Helper()
	tok := strings.TrimSpace(b.mustCLI("user", "token", "--email", email, "--role", string(role), "--ttl", "1h"))
	if fieldpass.CheckToken(tok) != nil {
		b.t.Fatalf("user token printed %q: want a token", tok)
	}
	return person{name: string(role), env: env("FIELDPASS_BROKER="+b.URL(), "FIELDPASS_TOKEN="+tok)}
}

func (p person) run(t *testing.T, args ...string) result {
	t.Helper()
	if p.ns != "" {
		return runCmd(t, p.env, "ip", p.ns.argv(bins.cli, args...)...)
	}
	return runCmd(t, p.env, bins.cli, args...)
}

func (p person) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := p.run(t, args...)
	if r.code != 0 {
		t.Fatalf("as %s: %v", p.name, r)
	}
	return r.stdout
}

// grant makes the vendor a grant of ssh on pump-7 with args (--duration,
// --reason, ...).
func (p person) grant(t *testing.T, args ...string) *fieldpass.Grant {
	t.Helper()
	args = append([]string{"grant", "create", "--user", vendorEmail, "--device", "pump-7", "--service", "ssh", "--json"}, args...)
	g := decode[*fieldpass.Grant](t, p.mustRun(t, args...))
	if g.Subject != vendorEmail || g.End.Sub(g.Start) <= 0 {
		t.Fatalf("grant create: %+v", g)
	}
	return g
}

func (p person) sessions(t *testing.T) []fieldpass.Session {
	t.Helper()
	return decode[[]fieldpass.Session](t, p.mustRun(t, "sessions", "--json"))
}

// waitSession polls the sessions until one satisfies cond.
func (p person) waitSession(t *testing.T, what string, cond func(fieldpass.Session) bool) fieldpass.Session {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ss := p.sessions(t)
		for _, s := range ss {
			if cond(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %s after 15s; sessions: %+v", what, ss)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func checkSession(t *testing.T, s fieldpass.Session, grantID string, reason fieldpass.EndReason) {
	t.Helper()
	if s.User != vendorEmail || s.Device != "pump-7" || s.Service != "ssh" || s.GrantID != grantID || s.EndReason != reason {
		t.Errorf("session %+v: want %s's ssh on pump-7 under grant %s, ended %s", s, vendorEmail, grantID, reason)
	}
	if s.ClientAddr != "127.0.0.1" {
		t.Errorf("session %s: client address %q, want 127.0.0.1", s.ID, s.ClientAddr)
	}
}

// checkBytes holds a session's byte counts against what the tap in front of
// sshd saw on the same connections.
func checkBytes(t *testing.T, what string, s fieldpass.Session, tapIn, tapOut int64) {
	t.Helper()
	t.Logf("%s: broker counted %d bytes in, %d out; sshd's side carried %d in, %d out", what, s.BytesIn, s.BytesOut, tapIn, tapOut)
	if s.BytesIn != tapIn || s.BytesOut != tapOut {
		t.Errorf("%s: session row has %d bytes in and %d out, but %d and %d reached and left sshd", what, s.BytesIn, s.BytesOut, tapIn, tapOut)
	}
	if s.BytesIn < 500 || s.BytesOut < 500 {
		t.Errorf("%s: %d bytes in, %d out: too few for an ssh session", what, s.BytesIn, s.BytesOut)
	}
}

// auditEvent is an event as `fieldpass audit --json` prints it.
type auditEvent struct {
	Seq     int64          `json:"seq"`
	Actor   string         `json:"actor"`
	Action  string         `json:"action"`
	Target  string         `json:"target"`
	Details map[string]any `json:"details"`
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, s)
	}
	return v
}

// superuserConn connects to the database of dbURL as the cluster's
// superuser, who can do what the broker cannot: disable triggers.
func superuserConn(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	db, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(pgtest.ClusterURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = db.Database
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
