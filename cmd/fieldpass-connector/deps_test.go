package main

import (
	"flag"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/depcheck"
)

var updateDeps = flag.Bool("update", false, "rewrite deps.txt from what fieldpass-connector links now")

// TestDeps pins what the connector links (deps.txt), and refuses, whatever
// deps.txt says, every server library and the people's HTTP client: the
// connector runs on small field hardware and speaks only the tunnel
// protocol, its enrolment exchange included.
func TestDeps(t *testing.T) {
	got := depcheck.List(t, ".")
	depcheck.Pinned(t, got, "deps.txt", *updateDeps, "go test ./cmd/fieldpass-connector -run TestDeps -update")
	depcheck.Deny(t, got, "./cmd/fieldpass-connector", "the connector is a small device agent: no server library, no API client, no alerts",
		"github.com/jackc/pgx",
		"github.com/pressly/goose",
		"github.com/go-chi/chi",
		"github.com/coreos/go-oidc",
		"github.com/go-jose/go-jose",
		"github.com/prometheus",
		"github.com/coder/websocket",
		"github.com/fieldpass/fieldpass/postgres",
		"github.com/fieldpass/fieldpass/apiserver",
		"github.com/fieldpass/fieldpass/portal",
		"github.com/fieldpass/fieldpass/broker",
		"github.com/fieldpass/fieldpass/identity",
		"github.com/fieldpass/fieldpass/metrics",
		"github.com/fieldpass/fieldpass/migrations",
		"github.com/fieldpass/fieldpass/httpapi",
		"github.com/fieldpass/fieldpass/alerts",
		"github.com/fieldpass/fieldpass/connector/httpsenroll",
		"github.com/fieldpass/fieldpass/cmd/internal/capool",
	)
}

// TestNoNetHTTP: net/http (client, transport, HTTP/2) was about a fifth of
// the connector's binary for one enrolment POST, and crypto/tls with
// crypto/x509 another 1.8-2.0 MB; the connector now enrols inside
// WireGuard (connector.EnrollInTunnel) and links none of them, unless built
// with -tags enroll_https. deps.txt lists no standard package, so this
// checks the ones that matter by themselves.
func TestNoNetHTTP(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	cmd := exec.Command(gobin, "list", "-deps", ".")
	cmd.Env = append(os.Environ(), depcheck.Env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, p := range []string{"net/http", "crypto/tls", "crypto/x509"} {
		if slices.Contains(deps, p) {
			t.Errorf("the connector links %s again: who imports it: go list -deps -f '{{.ImportPath}}: {{join .Imports \" \"}}' ./cmd/fieldpass-connector | grep '%s\\b'", p, p)
		}
	}
}
