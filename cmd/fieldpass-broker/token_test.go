package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/wgnet"
)

// TestTokenCreateInstallLines: token create prints the token alone on
// stdout (scripts read it), and on stderr the one-line install of each
// kind of device beside the enrol command carrying that token.
func TestTokenCreateInstallLines(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	var stdout, stderr bytes.Buffer
	env := map[string]string{"FIELDPASS_DATABASE_URL": dbURL, "FIELDPASS_PUBLIC_URL": "https://fieldpass.example.com"}
	err := run(t.Context(), []string{"token", "create", "--device", "pump-7", "--download-url", "https://mirror.example.com/fp"},
		func(k string) string { return env[k] }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, stderr.String())
	}
	tok := strings.TrimSuffix(stdout.String(), "\n")
	if strings.Contains(tok, "\n") || fieldpass.CheckEnrollmentToken(tok) != nil {
		t.Fatalf("stdout %q: want the token alone", stdout.String())
	}
	guide := stderr.String()
	for _, l := range fieldpass.ConnectorInstallLines("https://mirror.example.com/fp", fieldpass.Version) {
		if !strings.Contains(guide, "\n  "+l.Command+"\n") || !strings.Contains(guide, l.Target) {
			t.Errorf("stderr lacks the line for %s: %q", l.Target, l.Command)
		}
	}
	if want := "fieldpass-connector enroll --broker https://fieldpass.example.com --token " + tok + " --state-dir /var/lib/fieldpass-connector\n"; !strings.Contains(guide, want) {
		t.Errorf("stderr lacks the enrol command %q:\n%s", want, guide)
	}
}

// TestTokenCreateTunnelEnrol: with the broker's key at hand, token create
// prints the enrol command inside WireGuard: the token, the broker's
// public key and endpoint, and the token's tunnel address.
func TestTokenCreateTunnelEnrol(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	key, err := wgnet.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "broker.key")
	if err := os.WriteFile(keyFile, []byte(key.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	env := map[string]string{"FIELDPASS_DATABASE_URL": dbURL, "FIELDPASS_PUBLIC_URL": "https://fieldpass.example.com"}
	err = run(t.Context(), []string{"token", "create", "--device", "pump-8", "--key-file", keyFile, "--tunnel-prefix", "10.99.0.0/16"},
		func(k string) string { return env[k] }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, stderr.String())
	}
	tok := strings.TrimSuffix(stdout.String(), "\n")
	want := "fieldpass-connector enroll --token " + tok + " --broker-key " + key.Public().String() +
		" --endpoint fieldpass.example.com:51820 --address 10.99.255.254/16 --state-dir /var/lib/fieldpass-connector\n"
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr lacks the enrol command %q:\n%s", want, stderr.String())
	}
}
