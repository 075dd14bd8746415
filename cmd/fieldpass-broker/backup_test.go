package main

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// TestBackupRestore runs the backup and restore of deploy/README.md
// ("Backup and restore") with the PostgreSQL client tools: the roles with
// pg_dumpall --roles-only, the database with pg_dump --format=custom, both
// restored into a fresh cluster. There "audit verify" passes, with the
// checkpoint signed before the backup, as the broker's role, which still
// may append to the audit log and not alter it; the owner still owns the
// tables. A copy whose dump was edited (one audit event's actor) restores
// without a murmur from Postgres, and "audit verify" refuses it.
func TestBackupRestore(t *testing.T) {
	for _, tool := range []string{"pg_dump", "pg_dumpall", "pg_restore", "psql"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: the backup test needs the PostgreSQL client tools (Debian: apt-get install postgresql-client)", tool)
		}
	}
	dir := t.TempDir()
	owner, brokerRole := pgtest.NewRole(t, "fpowner"), pgtest.NewRole(t, "fpbroker")
	src := pgtest.NewEmptyDatabase(t, owner)
	ownerURL, brokerURL := pgtest.URLAs(t, src, owner), pgtest.URLAs(t, src, brokerRole)
	mustRun(t, ownerURL, "migrate", "--grant-to", brokerRole)

	// Audited admin work, a signed checkpoint, and more after it.
	mustRun(t, brokerURL, "token", "create", "--device", "pump-7")
	mustRun(t, brokerURL, "user", "token", "--email", "eng@example.com", "--role", "engineer", "--ttl", "1h")
	_, cpOut, err := runCmd(t, brokerURL, "audit", "checkpoint", "--checkpoint-key", filepath.Join(dir, "checkpoint.key"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`public key (\S+)`).FindStringSubmatch(cpOut)
	if m == nil {
		t.Fatalf("audit checkpoint printed %q: no public key", cpOut)
	}
	pub := m[1]
	mustRun(t, brokerURL, "user", "disable", "eng@example.com")
	want := mustRun(t, brokerURL, "audit", "verify", "--public-key", pub)
	if !regexp.MustCompile(`^audit chain intact: [3-9]\d* events\n$`).MatchString(want) {
		t.Fatalf("audit verify of the source: %q", want)
	}

	// Backup: the roles (cluster-wide, so not in pg_dump's output), then
	// the database as its owner.
	roles, dump := filepath.Join(dir, "roles.sql"), filepath.Join(dir, "fieldpass.dump")
	pgTool(t, "pg_dumpall", "--roles-only", "--dbname", pgtest.ClusterURL(t), "--file", roles)
	pgTool(t, "pg_dump", "--format=custom", "--dbname", ownerURL, "--file", dump)

	// Restore into a fresh cluster, which knows no role of ours.
	fresh := pgtest.NewCluster(t)
	pgTool(t, "psql", "--quiet", "--dbname", fresh, "--file", roles) // "role postgres already exists" is expected, and harmless
	pgTool(t, "psql", "-v", "ON_ERROR_STOP=1", "--dbname", fresh, "-c", "CREATE DATABASE fieldpass OWNER "+owner)
	restored := withDB(t, fresh, "fieldpass")
	pgTool(t, "pg_restore", "--exit-on-error", "--single-transaction", "--dbname", restored, dump)

	restoredBroker := pgtest.URLAs(t, restored, brokerRole)
	if got := mustRun(t, restoredBroker, "audit", "verify", "--public-key", pub); got != want {
		t.Errorf("audit verify of the restored copy: %q, want %q as before the backup", got, want)
	}
	if out := mustRun(t, restoredBroker, "migrate", "status"); !strings.Contains(out, "the database is up to date") {
		t.Errorf("migrate status of the restored copy:\n%s", out)
	}
	// The roles survived with their privileges: the owner owns the audit
	// log, the broker's role appends to it and cannot alter it.
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, restored)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tableOwner string
	var canInsert, canUpdate bool
	if err := conn.QueryRow(ctx, `SELECT tableowner, has_table_privilege($1, 'audit_events', 'INSERT'), has_table_privilege($1, 'audit_events', 'UPDATE')
		FROM pg_tables WHERE tablename = 'audit_events'`, brokerRole).Scan(&tableOwner, &canInsert, &canUpdate); err != nil {
		t.Fatal(err)
	}
	if tableOwner != owner || !canInsert || canUpdate {
		t.Errorf("restored audit_events: owner %s, %s may insert %v, update %v; want owner %s, insert only", tableOwner, brokerRole, canInsert, canUpdate, owner)
	}
	db, err := postgres.Open(ctx, restoredBroker)
	if err != nil {
		t.Fatal(err)
	}
	canAlter, err := db.CanAlterAudit(ctx)
	db.Close()
	if err != nil || canAlter {
		t.Errorf("the broker's role can alter the restored audit tables: %v, %v", canAlter, err)
	}
	mustRun(t, restoredBroker, "token", "create", "--device", "pump-8") // and serve's role appends again
	if out := mustRun(t, restoredBroker, "audit", "verify", "--public-key", pub); !strings.HasPrefix(out, "audit chain intact") {
		t.Errorf("audit verify after appending to the restored copy: %q", out)
	}

	// A dump edited on its way back: restored as plain SQL with one audit
	// event's actor changed.
	plain := filepath.Join(dir, "plain.sql")
	pgTool(t, "pg_restore", "--file", plain, dump)
	sql, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	copyAudit := regexp.MustCompile(`(?s)COPY public\.audit_events .*?\n\\\.\n`)
	block := copyAudit.Find(sql)
	if block == nil || !strings.Contains(string(block), "user.disable") {
		t.Fatalf("no audit_events data with the user.disable event in the dump:\n%s", sql)
	}
	edited := regexp.MustCompile(`operator:[^\t]*`).ReplaceAllLiteral(block, []byte("operator:nobody@nowhere"))
	if err := os.WriteFile(plain, []byte(strings.Replace(string(sql), string(block), string(edited), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	pgTool(t, "psql", "-v", "ON_ERROR_STOP=1", "--dbname", fresh, "-c", "CREATE DATABASE tampered OWNER "+owner)
	tampered := withDB(t, fresh, "tampered")
	pgTool(t, "psql", "-v", "ON_ERROR_STOP=1", "--quiet", "--dbname", tampered, "--file", plain)
	out, errOut, err := runCmd(t, pgtest.URLAs(t, tampered, brokerRole), "audit", "verify", "--public-key", pub)
	if err == nil || strings.Contains(out, "intact") {
		t.Fatalf("audit verify of a tampered restore passed: %q %q", out, errOut)
	}
	t.Logf("tampered restore: %v", cliexit.Message(err))
}

// pgTool runs a PostgreSQL client tool, failing the test with its output
// if it fails. PG* variables of the environment are dropped: the URLs say
// where to go.
func pgTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// withDB returns dbURL naming database name instead.
func withDB(t *testing.T, dbURL, name string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
