package main

import (
	"encoding/json"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestUserCommands(t *testing.T) {
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t)

	token := strings.TrimSpace(mustRun(t, dbURL, "user", "token", "--email", "Bot@Example.com", "--role", "admin", "--role", "auditor", "--ttl", "24h"))
	if err := fieldpass.CheckToken(token); err != nil {
		t.Fatalf("printed token %q: %v", token, err)
	}
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	u, tok, err := db.Authenticate(ctx, token)
	if err != nil || u.Email != "bot@example.com" || !u.HasRole(fieldpass.RoleAdmin) || !u.HasRole(fieldpass.RoleAuditor) || tok.Kind != fieldpass.TokenAutomation {
		t.Fatalf("Authenticate: got %+v, %+v, %v", u, tok, err)
	}
	// A second token for an existing user keeps the user's roles.
	// --ttl takes days, as the README's example does.
	out, errOut, err := runCmd(t, dbURL, "user", "token", "--email", "bot@example.com", "--role", "engineer", "--ttl", "30d")
	if err != nil || !strings.Contains(errOut, "--role ignored") {
		t.Errorf("second token: %v, stderr %q", err, errOut)
	}
	if _, tok, err := db.Authenticate(ctx, strings.TrimSpace(out)); err != nil || tok.ExpiresAt.Sub(tok.CreatedAt) != 30*24*time.Hour {
		t.Errorf("--ttl 30d: token %+v, %v; want one lasting 30 days", tok, err)
	}

	var users []fieldpass.User
	if err := json.Unmarshal([]byte(mustRun(t, dbURL, "user", "list", "--json")), &users); err != nil || len(users) != 1 || len(users[0].Roles) != 2 {
		t.Errorf("user list --json: got %+v, %v", users, err)
	}
	if out := mustRun(t, dbURL, "user", "list"); !strings.Contains(out, "bot@example.com") || !strings.Contains(out, "admin,auditor") {
		t.Errorf("user list:\n%s", out)
	}
	if out := mustRun(t, dbURL, "user", "disable", "bot@example.com"); !strings.Contains(out, "disabled") {
		t.Errorf("disable: %q", out)
	}
	if _, _, err := db.Authenticate(ctx, token); fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN {
		t.Errorf("token of a disabled user: got %v, want forbidden", err)
	}
	if out := mustRun(t, dbURL, "user", "enable", "bot@example.com"); !strings.Contains(out, "enabled") {
		t.Errorf("enable: %q", out)
	}

	evs, err := db.AuditEvents(ctx, fieldpass.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Action)
		if !strings.HasPrefix(e.Actor, "operator:") {
			t.Errorf("event %s by %q, want an operator", e.Action, e.Actor)
		}
	}
	want := []string{fieldpass.AuditUserCreate, fieldpass.AuditTokenIssue, fieldpass.AuditTokenIssue, fieldpass.AuditUserDisable, fieldpass.AuditUserEnable}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("audit actions: got %v, want %v", got, want)
	}

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"user", "token", "--email", "x@example.com"}, "--ttl is required"},
		{[]string{"user", "token", "--ttl", "1h"}, "--email is required"},
		{[]string{"user", "token", "--email", "x@example.com", "--ttl", "2400h"}, "at most"},
		{[]string{"user", "token", "--email", "x", "--ttl", "1h"}, "--email"},
		{[]string{"user", "token", "--email", "x@example.com", "--role", "root", "--ttl", "1h"}, "unknown role"},
		{[]string{"user", "frob"}, "unknown user subcommand"},
		{[]string{"user", "disable"}, "missing argument"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, err := runCmd(t, dbURL, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.msg) || cliexit.Code(err) != 2 {
				t.Errorf("got %v (exit %d), want a usage error containing %q", err, cliexit.Code(err), tc.msg)
			}
		})
	}
	_, _, err = runCmd(t, dbURL, "user", "disable", "nobody@example.com")
	if fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND || cliexit.Code(err) != 1 {
		t.Errorf("disable unknown user: got %v", err)
	}

	for _, args := range [][]string{{"user", "token", "-h"}, {"user", "list", "-h"}, {"user", "disable", "-h"}, {"user", "enable", "-h"}} {
		out, _, err := runCmd(t, dbURL, args...)
		if !errors.Is(err, flag.ErrHelp) || cliexit.Code(err) != 0 || !strings.Contains(out, "Usage: fieldpass-broker "+strings.Join(args[:2], " ")) {
			t.Errorf("%v: got %v, stdout %q", args, err, out)
		}
	}
	if out := mustRun(t, dbURL, "user", "-h"); !strings.Contains(out, "user token") {
		t.Errorf("user -h: %q", out)
	}
}
