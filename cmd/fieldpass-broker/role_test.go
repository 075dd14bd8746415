package main

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// runEnv runs the command with exactly the environment vars.
func runEnv(t *testing.T, vars map[string]string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), args, func(k string) string { return vars[k] }, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// TestMigrateGrantTo sets up the two roles of deploy/README.md: migrate runs
// as the schema's owner and grants the broker role what serve needs, and
// the broker role cannot touch the audit triggers.
func TestMigrateGrantTo(t *testing.T) {
	ctx := t.Context()
	owner, broker := pgtest.NewRole(t, "fp_owner"), pgtest.NewRole(t, "fp_broker")
	superURL := pgtest.NewEmptyDatabase(t, owner)
	ownerURL, brokerURL := pgtest.URLAs(t, superURL, owner), pgtest.URLAs(t, superURL, broker)

	out, errOut, err := runEnv(t, nil, "migrate", "--database-url", ownerURL, "--grant-to", broker)
	if err != nil || !strings.Contains(out, "up to date") || !strings.Contains(out, "role "+broker+" has the broker's privileges") {
		t.Fatalf("migrate --grant-to: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	// Again, from the environment, as the systemd unit runs it; the
	// migrate URL wins over the broker's.
	env := map[string]string{
		"FIELDPASS_MIGRATE_DATABASE_URL": ownerURL,
		"FIELDPASS_DATABASE_URL":         brokerURL,
		"FIELDPASS_BROKER_ROLE":          broker,
	}
	if out, errOut, err := runEnv(t, env, "migrate"); err != nil || !strings.Contains(out, broker) {
		t.Fatalf("migrate from the environment: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}

	// The admin commands work as the broker role.
	brokerEnv := map[string]string{"FIELDPASS_DATABASE_URL": brokerURL}
	for _, args := range [][]string{
		{"token", "create", "--device", "pump-7"},
		{"device", "list"},
		{"audit", "verify"},
	} {
		if _, errOut, err := runEnv(t, brokerEnv, args...); err != nil {
			t.Errorf("%s as the broker role: %v\n%s", strings.Join(args, " "), err, errOut)
		}
	}

	conn, err := pgx.Connect(ctx, brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		"ALTER TABLE audit_events DISABLE TRIGGER USER",
		"DROP TRIGGER audit_events_no_update_delete ON audit_events",
		"UPDATE audit_events SET actor = 'someone-else'",
		"DELETE FROM audit_events",
	} {
		_, err := conn.Exec(ctx, q)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s as the broker role: got %v, want permission denied", q, err)
		}
	}

	t.Run("missing role", func(t *testing.T) {
		_, _, err := runEnv(t, nil, "migrate", "--database-url", ownerURL, "--grant-to", "fieldpass_broker_missing")
		if msg := cliexit.Message(err); !strings.Contains(msg, "create it first: CREATE ROLE fieldpass_broker_missing LOGIN PASSWORD") || cliexit.Code(err) != 1 {
			t.Errorf("got %q (exit %d), want the CREATE ROLE hint", msg, cliexit.Code(err))
		}
	})

	t.Run("serve checks its role", func(t *testing.T) {
		for _, tc := range []struct {
			who, url       string
			require        bool
			wantErr, warns bool
		}{
			{"broker", brokerURL, true, false, false},
			{"owner", ownerURL, false, false, true},
			{"owner", ownerURL, true, true, false},
			{"superuser", superURL, true, true, false},
		} {
			db, err := postgres.Open(ctx, tc.url)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			err = checkRole(ctx, db, tc.require, slog.New(slog.NewTextHandler(&logs, nil)))
			db.Close()
			if (err != nil) != tc.wantErr || strings.Contains(logs.String(), "level=WARN") != tc.warns {
				t.Errorf("%s, require %v: got %v, log %q; want error %v, warning %v", tc.who, tc.require, err, logs.String(), tc.wantErr, tc.warns)
			}
			if err != nil && !strings.Contains(err.Error(), "migrate --grant-to") {
				t.Errorf("%s: %q does not name the fix", tc.who, err)
			}
		}
		// Through the command line: refused before anything is served.
		_, _, err := runEnv(t, map[string]string{"FIELDPASS_DATABASE_URL": ownerURL}, "serve", "--require-separate-role",
			"--public-url", "https://fieldpass.example.com", "--http-listen", "127.0.0.1:0", "--wg-listen", "127.0.0.1:0",
			"--init", "--key-file", filepath.Join(t.TempDir(), "broker.key"))
		if err == nil || !strings.Contains(err.Error(), "--require-separate-role") {
			t.Errorf("serve --require-separate-role as the owner: got %v, want a refusal", err)
		}
	})
}
