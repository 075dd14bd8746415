package main

import (
	"flag"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/depcheck"
)

var updateDeps = flag.Bool("update", false, "rewrite deps.txt from what fieldpass-broker links now")

// TestDeps pins what the broker links (deps.txt), so that a new dependency
// of the server is a visible line in review.
func TestDeps(t *testing.T) {
	got := depcheck.List(t, ".")
	depcheck.Pinned(t, got, "deps.txt", *updateDeps, "go test ./cmd/fieldpass-broker -run TestDeps -update")
}
