package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestOpenErrors(t *testing.T) {
	const password = "s3cr3t-pw"
	tests := []struct {
		name, url, want string
	}{
		{"unreachable URL", "postgres://fp:" + password + "@127.0.0.1:1/fieldpass?sslmode=disable&connect_timeout=5", "127.0.0.1:1"},
		{"unreachable key=value", "host=127.0.0.1 port=1 user=fp password=" + password + " dbname=fieldpass sslmode=disable connect_timeout=5", "127.0.0.1:1"},
		{"password in query", "postgres://fp@127.0.0.1:1/fieldpass?password=" + password + "&sslmode=disable", "127.0.0.1:1"},
		{"malformed URL", "postgres://fp:" + password + "@127.0.0.1:port/fieldpass", "invalid database URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := postgres.Open(t.Context(), tt.url)
			if err == nil {
				db.Close()
				t.Fatal("got no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("got %q, which shows the password", err)
			}
		})
	}
}

// TestMigrate runs the store's Migrate on an already migrated database: it
// must find nothing to do, as a second broker would.
func TestMigrate(t *testing.T) {
	t.Parallel()
	db, err := postgres.Open(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
}
