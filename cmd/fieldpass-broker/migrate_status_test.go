package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass/migrations"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// TestMigrateStatus follows a database from empty to migrated, then one
// migration behind (an upgrade to come), then ahead of this release (a
// downgrade): the table and the last line say which, and what to run.
func TestMigrateStatus(t *testing.T) {
	ctx := t.Context()
	dbURL := pgtest.NewEmptyDatabase(t, pgtest.Superuser)
	files, err := migrations.FS.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var sqlFiles []string
	for _, f := range files {
		if strings.HasSuffix(f.Name(), ".sql") {
			sqlFiles = append(sqlFiles, f.Name())
		}
	}
	n := len(sqlFiles)
	latest := sqlFiles[n-1]
	rows := func(out, state string) int {
		return len(regexp.MustCompile(`(?m)^\d+\s+\S+\.sql\s+`+state+`\s`).FindAllString(out, -1))
	}

	// Never migrated: all pending, and status created nothing.
	out := mustRun(t, dbURL, "migrate", "status")
	if !strings.HasPrefix(out, "VERSION  FILE") || rows(out, "pending") != n || !strings.Contains(out, "0 applied, "+itoa(n)+" pending: run \"fieldpass-broker migrate\"") {
		t.Errorf("status of an empty database:\n%s\nwant %d pending rows and the command to run", out, n)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var table *string
	if err := conn.QueryRow(ctx, "SELECT to_regclass('goose_db_version')::text").Scan(&table); err != nil || table != nil {
		t.Errorf("status created the version table (%v, %v): it must only read", table, err)
	}

	mustRun(t, dbURL, "migrate")
	out = mustRun(t, dbURL, "migrate", "status")
	if rows(out, "applied") != n || !strings.Contains(out, "All "+itoa(n)+" applied: the database is up to date.") ||
		!regexp.MustCompile(`(?m)^\d+\s+`+regexp.QuoteMeta(latest)+`\s+applied\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$`).MatchString(out) {
		t.Errorf("status after migrate:\n%s\nwant all %d applied, with times", out, n)
	}

	// One migration behind: what an upgrade to this release will apply.
	version := strings.TrimLeft(strings.SplitN(latest, "_", 2)[0], "0")
	if _, err := conn.Exec(ctx, "DELETE FROM goose_db_version WHERE version_id = "+version); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, dbURL, "migrate", "status")
	if !regexp.MustCompile(`(?m)^`+version+`\s+`+regexp.QuoteMeta(latest)+`\s+pending\s+-$`).MatchString(out) || !strings.Contains(out, itoa(n-1)+" applied, 1 pending") {
		t.Errorf("status one behind:\n%s\nwant %s pending", out, latest)
	}

	// Ahead: a newer release migrated it.
	if _, err := conn.Exec(ctx, "INSERT INTO goose_db_version (version_id, is_applied) VALUES (99999, true)"); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, dbURL, "migrate", "status")
	if !strings.Contains(out, "The database is at version 99999, newer than this release's "+version) {
		t.Errorf("status of a database a newer release migrated:\n%s", out)
	}
	var js struct {
		DatabaseVersion int64               `json:"database_version"`
		Migrations      []migrations.Status `json:"migrations"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, dbURL, "migrate", "status", "--json")), &js); err != nil {
		t.Fatal(err)
	}
	if js.DatabaseVersion != 99999 || len(js.Migrations) != n || js.Migrations[n-1].Applied || !js.Migrations[0].Applied || js.Migrations[0].AppliedAt.IsZero() {
		t.Errorf("--json: %+v", js)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
