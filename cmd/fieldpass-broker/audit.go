package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/cmd/internal/cliflag"
)

const auditUsage = `Usage:
  fieldpass-broker audit checkpoint --database-url URL --checkpoint-key FILE
  fieldpass-broker audit export --database-url URL [--since-seq N] > export.jsonl
  fieldpass-broker audit verify --database-url URL [--public-key KEY]
  fieldpass-broker audit verify --file export.jsonl --public-key KEY [--checkpoints older.jsonl ...]

The audit log is append-only and hash-chained. Sign checkpoints regularly and
keep exports somewhere the database's administrators cannot write: a
checkpoint from an older export catches a log that was cut short or
rewritten whole since.`

func (e env) audit(ctx context.Context, args []string) error {
	return e.dispatch(ctx, args, auditUsage, "audit subcommand", map[string]subcommand{
		"checkpoint": e.auditCheckpoint,
		"export":     e.auditExport,
		"verify":     e.auditVerify,
	})
}

// operatorActor names the person running an admin command on the server
// host, for the audit log: "operator:USER@HOST".
func (e env) operatorActor() string {
	name := ""
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	for _, v := range []string{"USER", "LOGNAME"} {
		if name == "" {
			name = e.getenv(v)
		}
	}
	if name == "" {
		name = "unknown"
	}
	if host, err := os.Hostname(); err == nil && host != "" {
		name += "@" + host
	}
	return "operator:" + name
}

func (e env) auditCheckpoint(ctx context.Context, args []string) error {
	fs := e.flagSet("audit checkpoint", "audit checkpoint --database-url URL --checkpoint-key FILE\n\n"+
		"Verifies the audit chain, signs (seq, hash) of its newest event with the checkpoint\n"+
		"key, stores the checkpoint and prints it as a JSON line (the export format).")
	dbURL := e.databaseFlag(fs)
	keyFile := fs.String("checkpoint-key", "", "the broker's ed25519 checkpoint key; created (0600) if missing")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *keyFile == "" {
		fs.Usage()
		return usageError{Msg: "--checkpoint-key is required"}
	}
	key, err := loadOrCreateCheckpointKey(*keyFile)
	if err != nil {
		return err
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	cp, err := db.CheckpointAudit(ctx, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "signed audit checkpoint at seq %d with public key %s\n", cp.Seq, base64.StdEncoding.EncodeToString(cp.PublicKey))
	return fieldpass.NewAuditExportWriter(e.stdout).WriteCheckpoint(cp)
}

func (e env) auditExport(ctx context.Context, args []string) error {
	fs := e.flagSet("audit export", "audit export --database-url URL [--since-seq N] > export.jsonl\n\n"+
		"Writes the audit log as JSON lines: a header, the checkpoints, then the events in\n"+
		"seq order. Verify it offline with \"audit verify --file\".")
	dbURL := e.databaseFlag(fs)
	since := fs.Int64("since-seq", 1, "first event to export")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *since < 1 {
		return usageError{Msg: "--since-seq: want 1 or more"}
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	w := bufio.NewWriter(e.stdout)
	ex := fieldpass.NewAuditExportWriter(w)
	if err := ex.WriteHeader(*since, time.Now()); err != nil {
		return err
	}
	cps, err := db.AuditCheckpoints(ctx, *since)
	if err != nil {
		return err
	}
	for _, cp := range cps {
		if err := ex.WriteCheckpoint(cp); err != nil {
			return err
		}
	}
	if err := db.ScanAudit(ctx, *since, ex.WriteEvent); err != nil {
		return err
	}
	return w.Flush()
}

func (e env) auditVerify(ctx context.Context, args []string) error {
	fs := e.flagSet("audit verify", "audit verify --database-url URL [--public-key KEY]\n"+
		"       fieldpass-broker audit verify --file export.jsonl --public-key KEY [--checkpoints older.jsonl ...]\n\n"+
		"Recomputes every hash of the audit chain and checks every link and checkpoint;\n"+
		"names the first broken link and exits 1 if the log does not check out. With --file\n"+
		"it checks an export offline, without a database, and checks checkpoint signatures.")
	dbURL := e.databaseFlag(fs)
	file := fs.String("file", "", "verify this export (JSON lines) instead of the database")
	pubFlag := fs.String("public-key", "", "the checkpoint public key (base64, as \"audit checkpoint\" prints it), or a file holding it")
	var older cliflag.Strings
	fs.Var(&older, "checkpoints", "an older export `FILE` whose checkpoints the log must still match (repeatable)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	var pub ed25519.PublicKey
	if *pubFlag != "" {
		var err error
		if pub, err = parsePublicKey(*pubFlag); err != nil {
			return err
		}
	}
	if *file == "" {
		if len(older) > 0 {
			return usageError{Msg: "--checkpoints goes with --file"}
		}
		return e.auditVerifyDB(ctx, *dbURL, pub)
	}
	if *dbURL != "" {
		return usageError{Msg: "--file verifies offline: give no --database-url"}
	}
	if pub == nil {
		fs.Usage()
		return usageError{Msg: "--public-key is required with --file: unsigned checkpoints prove nothing"}
	}
	open := func(name string) (io.ReadCloser, error) { return os.Open(name) }
	r, err := fieldpass.VerifyAuditExport(open, *file, older, pub)
	if err != nil {
		return err
	}
	if r.Events == 0 {
		fmt.Fprintf(e.stdout, "audit export intact: 0 events, %d checkpoints\n", r.Checkpoints)
		return nil
	}
	fmt.Fprintf(e.stdout, "audit export intact: %d events (seq %d-%d), %d checkpoints\n", r.Events, r.First, r.Last, r.Checkpoints)
	return nil
}

func (e env) auditVerifyDB(ctx context.Context, dbURL string, pub ed25519.PublicKey) error {
	db, err := e.openDB(ctx, dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := db.VerifyAudit(ctx)
	if err != nil {
		return err
	}
	if pub != nil {
		cps, err := db.AuditCheckpoints(ctx, 0)
		if err != nil {
			return err
		}
		for _, cp := range cps {
			if err := cp.Verify(pub); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(e.stdout, "audit chain intact: %d events\n", n)
	return nil
}

// loadOrCreateCheckpointKey reads the broker's ed25519 checkpoint key (the
// 32-byte seed in base64 on one line), creating it (0600) on first use.
// Checkpoints already handed out are checked against its public half:
// back it up, and keep it off the database host if you can.
func loadOrCreateCheckpointKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("checkpoint key file %s: want a 32-byte ed25519 seed in base64", path)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read checkpoint key file: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create checkpoint key dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create checkpoint key file: %w", err)
	}
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(key.Seed()) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("write checkpoint key file: %w", err)
	}
	return key, f.Close()
}

// parsePublicKey takes a checkpoint public key in base64, or the name of a
// file holding one.
func parsePublicKey(s string) (ed25519.PublicKey, error) {
	if b, err := os.ReadFile(s); err == nil {
		s = strings.TrimSpace(string(b))
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, usageError{Msg: "--public-key: want a 32-byte ed25519 public key in base64, or a file holding one"}
	}
	return k, nil
}
