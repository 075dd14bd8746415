package migrations_test

import (
	"context"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/fieldpass/fieldpass/migrations"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestUp applies the migrations to an empty database, then again to check
// that a second run (a second broker, a restart) finds nothing to do.
func TestUp(t *testing.T) {
	ctx := t.Context()
	admin, err := pgx.Connect(ctx, pgtest.ClusterURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) }) // after the drop below
	if _, err := admin.Exec(ctx, "CREATE DATABASE migrations_empty TEMPLATE template0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE migrations_empty WITH (FORCE)"); err != nil {
			t.Error(err)
		}
	})

	cfg, err := pgx.ParseConfig(pgtest.ClusterURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = "migrations_empty"
	db := stdlib.OpenDB(*cfg)
	defer db.Close()

	for run := 1; run <= 2; run++ {
		if err := migrations.Up(ctx, db, nil); err != nil {
			t.Fatalf("run %d: Up: %v", run, err)
		}
	}
	var version int64
	if err := db.QueryRowContext(ctx, "SELECT max(version_id) FROM goose_db_version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	// The newest migration file's number is the version Up must reach.
	entries, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(entries) == 0 {
		t.Fatalf("no migrations embedded: %v", err)
	}
	sort.Strings(entries)
	newest, err := strconv.ParseInt(strings.SplitN(entries[len(entries)-1], "_", 2)[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := version, newest; got != want {
		t.Errorf("schema version: got %d, want %d", got, want)
	}
	var tables int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('devices', 'enrollment_tokens')`).Scan(&tables)
	if err != nil {
		t.Fatal(err)
	}
	if tables != 2 {
		t.Errorf("tables devices and enrollment_tokens: got %d of them, want 2", tables)
	}
}
