package main

import (
	"flag"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/depcheck"
)

var updateDeps = flag.Bool("update", false, "rewrite deps.txt from what fieldpass links now")

// TestDeps pins what the CLI links (deps.txt), and refuses, whatever
// deps.txt says, every server library: the CLI is a client of the broker's
// HTTP API (package httpapi) and nothing more.
func TestDeps(t *testing.T) {
	got := depcheck.List(t, ".")
	depcheck.Pinned(t, got, "deps.txt", *updateDeps, "go test ./cmd/fieldpass -run TestDeps -update")
	depcheck.Deny(t, got, "./cmd/fieldpass", "the CLI is a client: no database, router, OIDC or metrics library",
		"github.com/jackc/pgx",
		"github.com/pressly/goose",
		"github.com/go-chi/chi",
		"github.com/coreos/go-oidc",
		"github.com/go-jose/go-jose",
		"github.com/prometheus",
		"github.com/fieldpass/fieldpass/postgres",
		"github.com/fieldpass/fieldpass/apiserver",
		"github.com/fieldpass/fieldpass/portal",
		"github.com/fieldpass/fieldpass/broker",
		"github.com/fieldpass/fieldpass/identity",
		"github.com/fieldpass/fieldpass/metrics",
		"github.com/fieldpass/fieldpass/migrations",
	)
}
