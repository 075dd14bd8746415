package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

const operator = "operator:root@host"

func (s *store) mustUser(tb testing.TB, email string, roles ...fieldpass.Role) *fieldpass.User {
	tb.Helper()
	u, err := s.EnsureUser(context.Background(), fieldpass.UserActor(email), email, roles)
	if err != nil {
		tb.Fatalf("EnsureUser(%s): %v", email, err)
	}
	return u
}

// actions returns the audit actions recorded so far, in order.
func (s *store) actions(tb testing.TB) []string {
	tb.Helper()
	evs, err := s.AuditEvents(context.Background(), fieldpass.AuditFilter{})
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Action)
	}
	return out
}

func wantActions(tb testing.TB, s *store, want ...string) {
	tb.Helper()
	if got := s.actions(tb); strings.Join(got, " ") != strings.Join(want, " ") {
		tb.Errorf("audit actions:\n got %v\nwant %v", got, want)
	}
}

func TestEnsureUser(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()

	u, err := s.EnsureUser(ctx, "oidc", " Alice@Example.COM ", []fieldpass.Role{"engineer", "admin", "engineer"})
	if err != nil {
		t.Fatal(err)
	}
	if u.Email != "alice@example.com" || strings.Join(roleNames(u.Roles), ",") != "admin,engineer" || u.Disabled || u.ID == "" {
		t.Errorf("created user: got %+v", u)
	}
	again, err := s.EnsureUser(ctx, "oidc", "alice@example.com", []fieldpass.Role{"admin", "engineer"})
	if err != nil || again.ID != u.ID {
		t.Fatalf("same login: got %+v, %v", again, err)
	}
	vendor, err := s.EnsureUser(ctx, "oidc", "alice@example.com", nil)
	if err != nil || !vendor.Vendor() {
		t.Fatalf("roles dropped: got %+v, %v; want a vendor", vendor, err)
	}
	got, err := s.User(ctx, "ALICE@example.com")
	if err != nil || got.ID != u.ID || len(got.Roles) != 0 {
		t.Errorf("User: got %+v, %v", got, err)
	}
	wantActions(t, s, fieldpass.AuditUserCreate, fieldpass.AuditUserRoles)

	for _, tc := range []struct {
		name, actor, email string
		roles              []fieldpass.Role
		code               string
	}{
		{"bad email", "oidc", "alice", nil, fieldpass.EINVALID},
		{"display name", "oidc", "Alice <alice@example.com>", nil, fieldpass.EINVALID},
		{"bad role", "oidc", "bob@example.com", []fieldpass.Role{"root"}, fieldpass.EINVALID},
		{"no actor", "", "bob@example.com", nil, fieldpass.EINVALID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.EnsureUser(ctx, tc.actor, tc.email, tc.roles)
			if got := fieldpass.ErrorCode(err); got != tc.code {
				t.Errorf("got %v, want code %s", err, tc.code)
			}
		})
	}
	_, err = s.User(ctx, "nobody@example.com")
	wantError(t, err, fieldpass.ENOTFOUND, "nobody@example.com")

	d, err := s.SetUserDisabled(ctx, operator, "alice@example.com", true)
	if err != nil || !d.Disabled {
		t.Fatalf("disable: got %+v, %v", d, err)
	}
	if _, err := s.SetUserDisabled(ctx, operator, "alice@example.com", true); err != nil {
		t.Fatalf("disable again: %v", err)
	}
	if u, err := s.EnsureUser(ctx, "oidc", "alice@example.com", nil); err != nil || !u.Disabled {
		t.Errorf("login of a disabled user: got %+v, %v; want it still disabled", u, err)
	}
	if _, err := s.SetUserDisabled(ctx, operator, "alice@example.com", false); err != nil {
		t.Fatal(err)
	}
	_, err = s.SetUserDisabled(ctx, operator, "nobody@example.com", true)
	wantError(t, err, fieldpass.ENOTFOUND, "not found")
	wantActions(t, s, fieldpass.AuditUserCreate, fieldpass.AuditUserRoles, fieldpass.AuditUserDisable, fieldpass.AuditUserEnable)

	users, err := s.Users(ctx)
	if err != nil || len(users) != 1 {
		t.Errorf("Users: got %d, %v; want 1", len(users), err)
	}
}

func roleNames(roles []fieldpass.Role) []string {
	var out []string
	for _, r := range roles {
		out = append(out, string(r))
	}
	return out
}

func TestTokens(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	s.mustUser(t, "alice@example.com", fieldpass.RoleEngineer)
	s.mustUser(t, "bob@example.com")

	token, tok, err := s.IssueToken(ctx, operator, "Alice@example.com", fieldpass.TokenAutomation, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := fieldpass.CheckToken(token); err != nil || !strings.HasPrefix(token, "fpt_") {
		t.Errorf("token %q: %v", token, err)
	}
	if tok.Kind != fieldpass.TokenAutomation || tok.Email != "alice@example.com" || !tok.ExpiresAt.Equal(s.clock.Now().Add(time.Hour)) {
		t.Errorf("token record: got %+v", tok)
	}
	if n := s.count(t, `SELECT count(*) FROM tokens WHERE token_hash = sha256($1::bytea)`, []byte(token)); n != 1 {
		t.Errorf("stored hash rows: got %d, want 1", n)
	}
	if n := s.count(t, `SELECT count(*) FROM audit_events WHERE details::text LIKE '%' || $1 || '%'`, token[4:]); n != 0 {
		t.Errorf("the token appears in the audit log")
	}
	bobToken, _, err := s.IssueToken(ctx, operator, "bob@example.com", fieldpass.TokenCLI, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	u, got, err := s.Authenticate(ctx, token)
	if err != nil || u.Email != "alice@example.com" || !u.HasRole(fieldpass.RoleEngineer) || got.ID != tok.ID {
		t.Fatalf("Authenticate: got %+v, %+v, %v", u, got, err)
	}
	if got.LastUsedAt.IsZero() {
		t.Errorf("last used not recorded")
	}
	if u, _, err := s.Authenticate(ctx, bobToken); err != nil || u.Email != "bob@example.com" || !u.Vendor() {
		t.Errorf("Bob's token: got %+v, %v; want Bob, a vendor", u, err)
	}

	forged := fieldpass.FormatToken([32]byte{1, 2, 3})
	for _, tc := range []struct {
		name, token, code, msg string
	}{
		{"empty", "", fieldpass.EINVALID, "malformed token"},
		{"enrolment token", "fpe_" + token[4:], fieldpass.EINVALID, "malformed token"},
		{"truncated", token[:len(token)-1], fieldpass.EINVALID, "malformed token"},
		{"forged", forged, fieldpass.ENOTFOUND, "unknown token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.Authenticate(ctx, tc.token)
			wantError(t, err, tc.code, tc.msg)
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error echoes the token: %v", err)
			}
		})
	}

	// Expiry: valid up to, not at, expires_at.
	s.clock.Add(time.Hour - time.Microsecond)
	if _, _, err := s.Authenticate(ctx, token); err != nil {
		t.Errorf("just before expiry: %v", err)
	}
	s.clock.Add(time.Microsecond)
	_, _, err = s.Authenticate(ctx, token)
	wantError(t, err, fieldpass.EEXPIRED, "expired")

	// Revocation and disabled users.
	s.clock.Add(-time.Hour)
	if _, err := s.RevokeToken(ctx, operator, tok.ID); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Authenticate(ctx, token)
	wantError(t, err, fieldpass.EFORBIDDEN, "revoked")
	_, err = s.RevokeToken(ctx, operator, tok.ID)
	wantError(t, err, fieldpass.ECONFLICT, "already revoked")
	_, err = s.RevokeToken(ctx, operator, "00000000-0000-0000-0000-000000000000")
	wantError(t, err, fieldpass.ENOTFOUND, "not found")

	if _, err := s.SetUserDisabled(ctx, operator, "bob@example.com", true); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Authenticate(ctx, bobToken)
	wantError(t, err, fieldpass.EFORBIDDEN, "disabled")
	_, _, err = s.IssueToken(ctx, operator, "bob@example.com", fieldpass.TokenCLI, time.Hour)
	wantError(t, err, fieldpass.EFORBIDDEN, "disabled")

	_, _, err = s.IssueToken(ctx, operator, "nobody@example.com", fieldpass.TokenCLI, time.Hour)
	wantError(t, err, fieldpass.ENOTFOUND, "not found")
	_, _, err = s.IssueToken(ctx, operator, "alice@example.com", "api", time.Hour)
	wantError(t, err, fieldpass.EINVALID, "kind")
	_, _, err = s.IssueToken(ctx, operator, "alice@example.com", fieldpass.TokenCLI, postgres.MaxTokenTTL+time.Second)
	wantError(t, err, fieldpass.EINVALID, "lifetime")
	_, _, err = s.IssueToken(ctx, operator, "alice@example.com", fieldpass.TokenCLI, 0)
	wantError(t, err, fieldpass.EINVALID, "lifetime")

	toks, err := s.Tokens(ctx, "alice@example.com")
	if err != nil || len(toks) != 1 || toks[0].RevokedBy != operator {
		t.Errorf("Tokens: got %+v, %v", toks, err)
	}
}

// TestTokenExpiredWords: an expired or revoked token says what to do for
// its kind. A bot cannot log in; its message names the operator's command
// that replaces its token (issue 11).
func TestTokenExpiredWords(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	s.mustUser(t, "bot@example.com", fieldpass.RoleEngineer)
	s.mustUser(t, "alice@example.com", fieldpass.RoleEngineer)
	issue := func(email string, kind fieldpass.TokenKind) (string, *fieldpass.Token) {
		t.Helper()
		tok, rec, err := s.IssueToken(ctx, operator, email, kind, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok, rec
	}
	bot, _ := issue("bot@example.com", fieldpass.TokenAutomation)
	cli, _ := issue("alice@example.com", fieldpass.TokenCLI)
	portal, _ := issue("alice@example.com", fieldpass.TokenSession)
	botRevoked, botRec := issue("bot@example.com", fieldpass.TokenAutomation)
	if _, err := s.RevokeToken(ctx, operator, botRec.ID); err != nil {
		t.Fatal(err)
	}
	expiry := s.clock.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	s.clock.Add(time.Hour)
	for _, tc := range []struct {
		name, token, code string
		want              []string
		not               string
	}{
		{"automation", bot, fieldpass.EEXPIRED, []string{"automation token of bot@example.com expired at " + expiry,
			"fieldpass-broker user token --email bot@example.com"}, "log in"},
		{"automation revoked", botRevoked, fieldpass.EFORBIDDEN, []string{"automation token of bot@example.com was revoked at",
			"fieldpass-broker user token --email bot@example.com"}, "log in"},
		{"cli", cli, fieldpass.EEXPIRED, []string{"token expired at " + expiry, "log in again (fieldpass login)"}, "fieldpass-broker"},
		{"portal", portal, fieldpass.EEXPIRED, []string{"portal session expired at " + expiry, "log in to the portal again"}, "fieldpass-broker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.Authenticate(ctx, tc.token)
			if got := fieldpass.ErrorCode(err); got != tc.code {
				t.Fatalf("code: got %s (%v), want %s", got, err, tc.code)
			}
			msg := fieldpass.ErrorMessage(err)
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, tc.not) {
				t.Errorf("message %q says %q", msg, tc.not)
			}
		})
	}
}

// TestListenUsers: disabling and enabling a user is announced within a
// second; a role change is not.
func TestListenUsers(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	s.mustUser(t, "a@example.com")
	ctx, cancel := context.WithCancel(t.Context())
	emails := make(chan string, 10)
	done := make(chan error, 1)
	go func() { done <- s.ListenUsers(ctx, func(e string) { emails <- e }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ListenUsers: %v", err)
		}
	})
	wantID(t, emails, "", 5*time.Second)
	s.mustUser(t, "a@example.com", fieldpass.RoleAdmin)
	s.mustUser(t, "b@example.com")
	if _, err := s.SetUserDisabled(ctx, operator, "b@example.com", true); err != nil {
		t.Fatal(err)
	}
	wantID(t, emails, "b@example.com", time.Second)
	if _, err := s.SetUserDisabled(ctx, operator, "b@example.com", false); err != nil {
		t.Fatal(err)
	}
	wantID(t, emails, "b@example.com", time.Second)
}
