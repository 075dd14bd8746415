package main

import (
	"flag"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/depcheck"
)

var updateDeps = flag.Bool("update", false, "rewrite deps.txt from what fieldpass-connector links now")

// TestDeps pins what the connector links (deps.txt), and refuses, whatever
// deps.txt says, every server library and the people's HTTP client: the
// connector runs on small field hardware and speaks only enrolment (package
// tunnel's types over net/http) and the tunnel protocol.
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
	)
}
