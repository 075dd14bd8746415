package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"
	"golang.org/x/oauth2"
)

// syncBuffer is written by run's goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const usersFile = "../../devidp/testdata/users.json"

// start runs the program on a loopback port and returns its issuer; the
// program is stopped, and must return nil, when the test ends.
func start(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--listen", "127.0.0.1:0"}, args...), func(string) string { return "" }, &stdout, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	issuerLine := regexp.MustCompile(`(?m)^issuer (\S+)$`)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := issuerLine.FindStringSubmatch(stdout.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("run ended before serving: %v\n%s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("no issuer line on stdout: %q", stdout.String())
	return ""
}

func TestServe(t *testing.T) {
	calls := make(chan url.Values, 1)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls <- r.URL.Query() }))
	defer cb.Close()
	redirect := cb.URL + "/auth/callback"

	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("dev-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key.pem")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	issuer := start(t, "--users", usersFile, "--client-id", "broker", "--client-secret-file", secretFile, "--redirect-uri", redirect, "--signing-key", keyFile)

	ctx := t.Context()
	p, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &oauth2.Config{ClientID: "broker", ClientSecret: "dev-secret", Endpoint: p.Endpoint(), RedirectURL: redirect, Scopes: []string{"openid", "email", "groups"}}
	verifier := oauth2.GenerateVerifier()
	authURL := cfg.AuthCodeURL("st", oidc.Nonce("nonce-1"), oauth2.S256ChallengeOption(verifier))

	jar, _ := cookiejar.New(nil)
	b := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := b.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="id" value="([^"]+)"`).FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("authorize: %s, no login form: %s", resp.Status, page)
	}
	resp, err = b.PostForm(resp.Request.URL.ResolveReference(&url.URL{Path: "/login"}).String(),
		url.Values{"id": {string(m[1])}, "username": {"auditor@example.com"}, "password": {"auditor-dev-password"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var got url.Values
	select {
	case got = <-calls:
	default:
	}
	if resp.StatusCode != http.StatusOK || got.Get("code") == "" || got.Get("state") != "st" {
		t.Fatalf("login: %s at %s, callback query %v", resp.Status, resp.Request.URL, got)
	}
	tok, err := cfg.Exchange(ctx, got.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := p.Verifier(&oidc.Config{ClientID: "broker"}).Verify(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Email  string   `json:"email"`
		Groups []string `json:"groups"`
	}
	if err := idt.Claims(&claims); err != nil || idt.Nonce != "nonce-1" || claims.Email != "auditor@example.com" || strings.Join(claims.Groups, ",") != "fp-auditors" {
		t.Errorf("ID token: nonce %q, claims %+v, %v", idt.Nonce, claims, err)
	}

	// The ID token is signed with the key from the file.
	jwks, err := http.Get(issuer + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer jwks.Body.Close()
	body, _ := io.ReadAll(jwks.Body)
	if n := strings.Count(string(body), `"kid"`); n != 1 {
		t.Errorf("JWKS has %d keys, want 1: %s", n, body)
	}
	if _, err := (&oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{&key.PublicKey}}).VerifySignature(ctx, raw); err != nil {
		t.Errorf("ID token not signed with --signing-key: %v", err)
	}
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error; "" for --help
	}{
		{"help", []string{"--help"}, ""},
		{"no users", nil, "--users FILE is required"},
		{"remote listen", []string{"--users", usersFile, "--listen", "0.0.0.0:0"}, "not a loopback address"},
		{"all interfaces", []string{"--users", usersFile, "--listen", ":0"}, "not a loopback address"},
		{"remote issuer", []string{"--users", usersFile, "--listen", "127.0.0.1:0", "--issuer", "https://idp.example.com"}, "not on a loopback host"},
		{"two secrets", []string{"--users", usersFile, "--client-secret", "a", "--client-secret-file", empty}, "give the client secret once"},
		{"empty secret file", []string{"--users", usersFile, "--client-secret-file", empty}, "is empty"},
		{"missing users file", []string{"--users", filepath.Join(dir, "nope.json")}, "no such file"},
		{"stray argument", []string{"--users", usersFile, "serve"}, "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tc.args, func(string) string { return "" }, &stdout, &stderr)
			if tc.want == "" {
				if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "FOR DEVELOPMENT AND TESTS ONLY") {
					t.Errorf("--help: %v, stderr %q", err, stderr.String())
				}
				return
			}
			if err == nil || !strings.Contains(cliexit.Message(err), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
