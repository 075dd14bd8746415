package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestNewDatabase checks that each database is migrated, separate from the
// others, and gone when its test ends.
func TestNewDatabase(t *testing.T) {
	ctx := t.Context()
	admin, err := pgx.Connect(ctx, pgtest.ClusterURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })

	var name string
	t.Run("use", func(t *testing.T) {
		first := mustConnect(t, pgtest.NewDatabase(t))
		second := mustConnect(t, pgtest.NewDatabase(t))
		if err := first.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if _, err := first.Exec(ctx, "SELECT nextval('device_tunnel_seq')"); err != nil {
			t.Fatalf("migrated schema: %v", err)
		}
		var next int64
		if err := second.QueryRow(ctx, "SELECT nextval('device_tunnel_seq')").Scan(&next); err != nil {
			t.Fatal(err)
		}
		if next != 1 {
			t.Errorf("second database's sequence: got %d, want 1 (untouched by the first)", next)
		}
	})

	var n int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func mustConnect(tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
