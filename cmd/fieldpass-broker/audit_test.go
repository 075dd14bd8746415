package main

// Package main because run is unexported: these tests drive the commands
// exactly as main does, against a real Postgres.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// runCmd runs the broker command line args with FIELDPASS_DATABASE_URL set
// to dbURL and returns its stdout, stderr and error.
func runCmd(t *testing.T, dbURL string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string {
		if k == "FIELDPASS_DATABASE_URL" {
			return dbURL
		}
		return ""
	}
	err := run(t.Context(), args, getenv, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func mustRun(t *testing.T, dbURL string, args ...string) string {
	t.Helper()
	out, errOut, err := runCmd(t, dbURL, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// mustExport runs audit export into a file and returns its name.
func mustExport(t *testing.T, dbURL, name string, args ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	out := mustRun(t, dbURL, append([]string{"audit", "export"}, args...)...)
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// superuser connects to the test database as the cluster's superuser.
func superuser(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	dbCfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(pgtest.ClusterURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = dbCfg.Database
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func wantChainError(t *testing.T, err error, msg string) {
	t.Helper()
	var ce *fieldpass.AuditChainError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), msg) {
		t.Fatalf("got %v, want an audit chain error containing %q", err, msg)
	}
	if cliexit.Code(err) != 1 {
		t.Errorf("exit code: got %d, want 1", cliexit.Code(err))
	}
}

func TestAuditCommands(t *testing.T) {
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t)
	keyFile := filepath.Join(t.TempDir(), "keys", "checkpoint.key")

	// The operator's actions are recorded.
	token := strings.TrimSpace(mustRun(t, dbURL, "token", "create", "--device", "pump-7", "--label", "site=north", "--ttl", "2h"))
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.EnrollAudited(ctx, "192.0.2.7", token, "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "v1", func(seq int64) (netip.Addr, error) {
		return netip.AddrFrom4([4]byte{100, 64, 0, byte(seq)}), nil
	}); err != nil {
		t.Fatal(err)
	}
	mustRun(t, dbURL, "device", "disable", "pump-7")
	mustRun(t, dbURL, "device", "enable", "pump-7")
	mustRun(t, dbURL, "device", "decommission", "pump-7")

	evs, err := db.AuditEvents(ctx, fieldpass.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	wantActions := []string{fieldpass.AuditTokenCreate, fieldpass.AuditDeviceEnroll, fieldpass.AuditDeviceDisable,
		fieldpass.AuditDeviceEnable, fieldpass.AuditDeviceDecommission}
	if len(evs) != len(wantActions) {
		t.Fatalf("events: got %d, want %d: %+v", len(evs), len(wantActions), evs)
	}
	for i, e := range evs {
		if e.Action != wantActions[i] {
			t.Errorf("seq %d: action %s, want %s", e.Seq, e.Action, wantActions[i])
		}
		wantActor := "operator:"
		if e.Action == fieldpass.AuditDeviceEnroll {
			wantActor = "device:pump-7"
		}
		if !strings.HasPrefix(e.Actor, wantActor) {
			t.Errorf("seq %d: actor %q, want it to start with %q", e.Seq, e.Actor, wantActor)
		}
	}

	// verify, against the database.
	if out := mustRun(t, dbURL, "audit", "verify"); out != "audit chain intact: 5 events\n" {
		t.Errorf("audit verify: got %q", out)
	}

	// checkpoint creates its key, 0600, and prints the checkpoint.
	out, errOut, err := runCmd(t, dbURL, "audit", "checkpoint", "--checkpoint-key", keyFile)
	if err != nil {
		t.Fatalf("audit checkpoint: %v\n%s", err, errOut)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v, want mode 0600", fi, err)
	}
	if !strings.Contains(out, `"type":"checkpoint","seq":5`) {
		t.Errorf("audit checkpoint printed %q", out)
	}
	pub := strings.TrimSpace(errOut[strings.LastIndex(errOut, " "):])
	// A second checkpoint reuses the key.
	_, errOut2, err := runCmd(t, dbURL, "audit", "checkpoint", "--checkpoint-key", keyFile)
	if err != nil || !strings.Contains(errOut2, pub) {
		t.Fatalf("second checkpoint: %v, %q, want key %s", err, errOut2, pub)
	}
	if out := mustRun(t, dbURL, "audit", "verify", "--public-key", pub); out != "audit chain intact: 5 events\n" {
		t.Errorf("audit verify --public-key: got %q", out)
	}

	// export and verify offline: no database.
	old := mustExport(t, dbURL, "old.jsonl")
	if out := mustRun(t, "", "audit", "verify", "--file", old, "--public-key", pub); out != "audit export intact: 5 events (seq 1-5), 2 checkpoints\n" {
		t.Errorf("offline verify: got %q", out)
	}
	partial := mustExport(t, dbURL, "partial.jsonl", "--since-seq", "3")
	if out := mustRun(t, "", "audit", "verify", "--file", partial, "--public-key", pub); out != "audit export intact: 3 events (seq 3-5), 2 checkpoints\n" {
		t.Errorf("offline verify of a partial export: got %q", out)
	}

	t.Run("wrong key", func(t *testing.T) {
		otherKey := filepath.Join(t.TempDir(), "other.key")
		other, err := loadOrCreateCheckpointKey(otherKey)
		if err != nil {
			t.Fatal(err)
		}
		otherPub := base64.StdEncoding.EncodeToString(other.Public().(ed25519.PublicKey))
		_, _, err = runCmd(t, "", "audit", "verify", "--file", old, "--public-key", otherPub)
		if err == nil || !strings.Contains(err.Error(), "bad signature") {
			t.Errorf("got %v, want a bad signature", err)
		}
	})

	t.Run("edited export", func(t *testing.T) {
		b, err := os.ReadFile(old)
		if err != nil {
			t.Fatal(err)
		}
		edited := filepath.Join(t.TempDir(), "edited.jsonl")
		if err := os.WriteFile(edited, bytes.Replace(b, []byte(`"to":"disabled"`), []byte(`"to":"active"`), 1), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err = runCmd(t, "", "audit", "verify", "--file", edited, "--public-key", pub)
		wantChainError(t, err, "seq 3: hash does not match")
	})

	// An attacker with superuser rights removes the newest events, and the
	// checkpoints with them. The database and a new export check out...
	su := superuser(t, dbURL)
	for _, q := range []string{
		"ALTER TABLE audit_events DISABLE TRIGGER USER",
		"ALTER TABLE audit_checkpoints DISABLE TRIGGER USER",
		"DELETE FROM audit_events WHERE seq > 3",
		"DELETE FROM audit_checkpoints",
		"ALTER TABLE audit_events ENABLE TRIGGER USER",
		"ALTER TABLE audit_checkpoints ENABLE TRIGGER USER",
	} {
		if _, err := su.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if out := mustRun(t, dbURL, "audit", "verify"); out != "audit chain intact: 3 events\n" {
		t.Errorf("audit verify after the cut: got %q (a cut end is invisible to the database alone)", out)
	}
	cut := mustExport(t, dbURL, "cut.jsonl")
	if out := mustRun(t, "", "audit", "verify", "--file", cut, "--public-key", pub); out != "audit export intact: 3 events (seq 1-3), 0 checkpoints\n" {
		t.Errorf("offline verify of the cut export alone: got %q", out)
	}
	// ...but not against the checkpoints of the older export.
	_, _, err = runCmd(t, "", "audit", "verify", "--file", cut, "--public-key", pub, "--checkpoints", old)
	wantChainError(t, err, "seq 4: missing: a checkpoint signed")

	// Rewritten whole, with new events after the cut: the chain checks
	// out, the old checkpoint does not.
	mustRun(t, dbURL, "token", "create", "--device", "pump-8")
	mustRun(t, dbURL, "token", "create", "--device", "pump-9")
	if out := mustRun(t, dbURL, "audit", "verify"); out != "audit chain intact: 5 events\n" {
		t.Errorf("audit verify after the rewrite: got %q", out)
	}
	rewritten := mustExport(t, dbURL, "rewritten.jsonl")
	_, _, err = runCmd(t, "", "audit", "verify", "--file", rewritten, "--public-key", pub, "--checkpoints", old)
	wantChainError(t, err, "seq 5: hash differs from the checkpoint")

	// A checkpoint of a tampered log is refused.
	if _, err := su.Exec(ctx, "ALTER TABLE audit_events DISABLE TRIGGER USER; UPDATE audit_events SET target = 'device:x' WHERE seq = 2; ALTER TABLE audit_events ENABLE TRIGGER USER"); err != nil {
		t.Fatal(err)
	}
	_, _, err = runCmd(t, dbURL, "audit", "verify")
	wantChainError(t, err, "audit chain broken at seq 2: hash does not match")
	_, _, err = runCmd(t, dbURL, "audit", "checkpoint", "--checkpoint-key", keyFile)
	wantChainError(t, err, "refusing to sign")
}

func TestAuditUsage(t *testing.T) {
	for _, args := range [][]string{
		{"audit", "-h"},
		{"audit", "checkpoint", "-h"},
		{"audit", "export", "-h"},
		{"audit", "verify", "-h"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, errOut, err := runCmd(t, "", args...)
			if err != nil && !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("got %v", err)
			}
			if help := out + errOut; !strings.Contains(help, "Usage:") || !strings.Contains(help, "audit") {
				t.Errorf("help: got %q", help)
			}
		})
	}
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"audit"}, "missing subcommand"},
		{[]string{"audit", "shred"}, "unknown audit subcommand"},
		{[]string{"audit", "checkpoint", "--database-url", "postgres://x"}, "--checkpoint-key is required"},
		{[]string{"audit", "verify", "--file", "x.jsonl"}, "--public-key is required"},
		{[]string{"audit", "verify", "--file", "x.jsonl", "--public-key", "nope"}, "--public-key: want"},
		{[]string{"audit", "verify", "--checkpoints", "x.jsonl", "--database-url", "postgres://x"}, "--checkpoints goes with --file"},
		{[]string{"audit", "export", "--since-seq", "0", "--database-url", "postgres://x"}, "--since-seq"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, _, err := runCmd(t, "", tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.msg) || cliexit.Code(err) != 2 {
				t.Errorf("got %v (exit %d), want a usage error containing %q", err, cliexit.Code(err), tt.msg)
			}
		})
	}
}
