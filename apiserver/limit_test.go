package apiserver_test

import (
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// limitEnv is the API with small limits, reached from loopback, and a
// user with a valid token.
func limitEnv(t *testing.T, mod func(*apiserver.Config)) (*httptest.Server, string) {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	cfg := apiserver.Config{DB: db, EnrollRate: 0.001, EnrollBurst: 5, AuthRate: 0.001, AuthBurst: 20}
	if mod != nil {
		mod(&cfg)
	}
	srv := httptest.NewServer(apiserver.New(cfg).Handler())
	t.Cleanup(srv.Close)
	if _, err := db.EnsureUser(ctx, "operator:test", "eng@example.com", []fieldpass.Role{fieldpass.RoleEngineer}); err != nil {
		t.Fatal(err)
	}
	tok, _, err := db.IssueToken(ctx, "operator:test", "eng@example.com", fieldpass.TokenCLI, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return srv, tok
}

func getMe(t *testing.T, url, token, forwardedFor string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/api/v1/me", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if forwardedFor != "" {
		req.Header.Set("X-Forwarded-For", forwardedFor)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func madeUpToken() string {
	var b [32]byte
	rand.Read(b[:])
	return fieldpass.FormatToken(b)
}

// TestBadTokensDoNotStarveValidOnes: issue 10 sent 250 requests with a
// made-up token, and then a real user's valid token got 429. Failures are
// now charged to their own bucket, after the token check.
func TestBadTokensDoNotStarveValidOnes(t *testing.T) {
	srv, tok := limitEnv(t, nil)
	limited := 0
	for range 250 {
		switch getMe(t, srv.URL, madeUpToken(), "") {
		case http.StatusTooManyRequests:
			limited++
		case http.StatusUnauthorized:
		default:
			t.Fatal("a made-up token was not refused")
		}
	}
	if limited == 0 {
		t.Error("250 made-up tokens from one address were never limited")
	}
	if got := getMe(t, srv.URL, tok, ""); got != http.StatusOK {
		t.Fatalf("valid token after a flood of bad ones: %d, want 200", got)
	}
}

// TestLimitsPerClientBehindProxy: behind the documented reverse proxy every
// request comes from 127.0.0.1; with --trusted-proxy the client address is
// the proxy's X-Forwarded-For, so one client's flood leaves the others
// alone. From an untrusted peer the header is ignored.
func TestLimitsPerClientBehindProxy(t *testing.T) {
	trusted := func(c *apiserver.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	t.Run("trusted proxy", func(t *testing.T) {
		srv, _ := limitEnv(t, trusted)
		for range 40 {
			getMe(t, srv.URL, madeUpToken(), "198.51.100.7")
		}
		if got := getMe(t, srv.URL, madeUpToken(), "198.51.100.7"); got != http.StatusTooManyRequests {
			t.Fatalf("flooding client: %d, want 429", got)
		}
		if got := getMe(t, srv.URL, madeUpToken(), "203.0.113.20"); got != http.StatusUnauthorized {
			t.Fatalf("another client behind the same proxy: %d, want 401 (its own bucket)", got)
		}
	})
	t.Run("untrusted peer", func(t *testing.T) {
		srv, _ := limitEnv(t, nil)
		for i := range 40 {
			// Rotating a forged header must not buy fresh buckets.
			getMe(t, srv.URL, madeUpToken(), netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String())
		}
		if got := getMe(t, srv.URL, madeUpToken(), "203.0.113.20"); got != http.StatusTooManyRequests {
			t.Fatalf("forged X-Forwarded-For from an untrusted peer: %d, want 429 (the peer's own bucket)", got)
		}
	})
}

// TestAuthenticatedLimitPerUser: a valid token's requests are limited per
// user, not per address: one person's script does not lock out everyone
// behind the same proxy, and does not get a fresh bucket per address.
func TestAuthenticatedLimitPerUser(t *testing.T) {
	srv, tok := limitEnv(t, func(c *apiserver.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	})
	limited := false
	for i := range 40 {
		if getMe(t, srv.URL, tok, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String()) == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("40 requests of one user from 40 addresses were never limited (burst 20)")
	}
}
