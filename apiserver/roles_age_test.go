package apiserver_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// TestRolesReadTooLongAgoForceLogin: issue 10 found roles rewritten only at
// a browser login, so a person removed from an identity provider group kept
// their roles on CLI tokens for up to 30 days. A login's token is refused
// once the roles it carries were read from the provider longer ago than
// RolesMaxAge: the person logs in again, and the roles are read afresh.
func TestRolesReadTooLongAgoForceLogin(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	now := time.Now()
	clock := func() time.Time { return now }
	db.Now = clock
	srv := httptest.NewServer(apiserver.New(apiserver.Config{DB: db, Now: clock, RolesMaxAge: 24 * time.Hour}).Handler())
	t.Cleanup(srv.Close)

	if _, err := db.LoginUser(ctx, "user:eng@example.com", postgres.LoginIdentity{
		Issuer: "https://idp.example.com", Subject: "eng-1", Email: "eng@example.com", Roles: []fieldpass.Role{fieldpass.RoleAdmin},
	}); err != nil {
		t.Fatal(err)
	}
	tok, _, err := db.IssueToken(ctx, "user:eng@example.com", "eng@example.com", fieldpass.TokenCLI, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := getMe(t, srv.URL, tok, ""); got != http.StatusOK {
		t.Fatalf("fresh roles: %d, want 200", got)
	}
	now = now.Add(25 * time.Hour)
	if got := getMe(t, srv.URL, tok, ""); got != http.StatusUnauthorized {
		t.Fatalf("roles read 25h ago (max 24h): %d, want 401: log in again", got)
	}
	// A new login reads the roles again: the token works once more.
	if _, err := db.LoginUser(ctx, "user:eng@example.com", postgres.LoginIdentity{
		Issuer: "https://idp.example.com", Subject: "eng-1", Email: "eng@example.com",
	}); err != nil {
		t.Fatal(err)
	}
	if got := getMe(t, srv.URL, tok, ""); got != http.StatusOK {
		t.Fatalf("after a new login: %d, want 200", got)
	}
}
