package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
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
		return usageError{msg: "--checkpoint-key is required"}
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
	return newExportEncoder(e.stdout).Encode(checkpointLine(cp))
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
		return usageError{msg: "--since-seq: want 1 or more"}
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	w := bufio.NewWriter(e.stdout)
	enc := newExportEncoder(w)
	if err := enc.Encode(exportLine{Type: "header", Format: exportFormat, SinceSeq: *since, At: time.Now().UTC()}); err != nil {
		return err
	}
	cps, err := db.AuditCheckpoints(ctx, *since)
	if err != nil {
		return err
	}
	for _, cp := range cps {
		if err := enc.Encode(checkpointLine(cp)); err != nil {
			return err
		}
	}
	err = db.ScanAudit(ctx, *since, func(ev fieldpass.AuditEvent) error {
		l, err := eventLine(ev)
		if err != nil {
			return err
		}
		return enc.Encode(l)
	})
	if err != nil {
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
			return usageError{msg: "--checkpoints goes with --file"}
		}
		return e.auditVerifyDB(ctx, *dbURL, pub)
	}
	if *dbURL != "" {
		return usageError{msg: "--file verifies offline: give no --database-url"}
	}
	if pub == nil {
		fs.Usage()
		return usageError{msg: "--public-key is required with --file: unsigned checkpoints prove nothing"}
	}
	r, err := verifyExport(*file, older, pub)
	if err != nil {
		return err
	}
	if r.events == 0 {
		fmt.Fprintf(e.stdout, "audit export intact: 0 events, %d checkpoints\n", r.checkpoints)
		return nil
	}
	fmt.Fprintf(e.stdout, "audit export intact: %d events (seq %d-%d), %d checkpoints\n", r.events, r.first, r.last, r.checkpoints)
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

type verifyResult struct {
	events, first, last int64
	checkpoints         int
}

// verifyExport checks the export in path against its own checkpoints and
// those of the older exports, all of which must be signed by pub. It reads
// path twice (checkpoints, then events), so memory does not grow with the
// log.
func verifyExport(path string, older []string, pub ed25519.PublicKey) (verifyResult, error) {
	var res verifyResult
	var cps []fieldpass.AuditCheckpoint
	var since int64 = 1
	for _, p := range append(append([]string{}, older...), path) {
		err := readExport(p, func(l exportLine) error {
			switch l.Type {
			case "header":
				if p == path {
					since = l.SinceSeq
				}
			case "checkpoint":
				cp, err := l.checkpoint()
				if err != nil {
					return err
				}
				if err := cp.Verify(pub); err != nil {
					return err
				}
				cps = append(cps, cp)
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	want := map[int64][]byte{}
	for _, cp := range cps {
		want[cp.Seq] = nil
	}
	var chain fieldpass.AuditChain
	if since > 1 {
		chain.Anchor(since)
	}
	err := readExport(path, func(l exportLine) error {
		if l.Type != "event" {
			return nil
		}
		ev, err := l.event()
		if err != nil {
			return err
		}
		if err := chain.Add(ev); err != nil {
			return err
		}
		if _, ok := want[ev.Seq]; ok {
			want[ev.Seq] = ev.Hash
		}
		if res.first == 0 {
			res.first = ev.Seq
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if since > 1 {
		// Checkpoints before the export's start cannot be checked here.
		kept := cps[:0]
		for _, cp := range cps {
			if cp.Seq >= since {
				kept = append(kept, cp)
			}
		}
		cps = kept
	}
	if err := chain.CheckCheckpoints(cps, func(seq int64) ([]byte, error) { return want[seq], nil }); err != nil {
		return res, err
	}
	res.events = chain.Checked()
	res.last, _ = chain.Last()
	res.checkpoints = len(cps)
	return res, nil
}

// The export format: one JSON object per line. Hashes are hex, keys and
// signatures base64, times RFC 3339 in UTC with microseconds.
const exportFormat = "fieldpass-audit-export-v1"

type exportLine struct {
	Type string `json:"type"` // header, checkpoint, event

	Format   string `json:"format,omitempty"`    // header
	SinceSeq int64  `json:"since_seq,omitempty"` // header: the first event exported

	Seq       int64           `json:"seq,omitempty"`
	At        time.Time       `json:"at"`
	Actor     string          `json:"actor,omitempty"`
	Action    string          `json:"action,omitempty"`
	Target    string          `json:"target,omitempty"`
	Details   json.RawMessage `json:"details,omitempty"`
	PrevHash  string          `json:"prev_hash,omitempty"`
	Hash      string          `json:"hash,omitempty"`
	PublicKey string          `json:"public_key,omitempty"`
	Signature string          `json:"signature,omitempty"`
}

func newExportEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

func eventLine(ev fieldpass.AuditEvent) (exportLine, error) {
	d, err := fieldpass.CanonicalAuditDetails(ev.Details)
	if err != nil {
		return exportLine{}, err
	}
	return exportLine{
		Type: "event", Seq: ev.Seq, At: ev.At.UTC(), Actor: ev.Actor, Action: ev.Action, Target: ev.Target,
		Details: d, PrevHash: hex.EncodeToString(ev.PrevHash), Hash: hex.EncodeToString(ev.Hash),
	}, nil
}

func checkpointLine(cp fieldpass.AuditCheckpoint) exportLine {
	return exportLine{
		Type: "checkpoint", Seq: cp.Seq, At: cp.At.UTC(), Hash: hex.EncodeToString(cp.Hash),
		PublicKey: base64.StdEncoding.EncodeToString(cp.PublicKey), Signature: base64.StdEncoding.EncodeToString(cp.Signature),
	}
}

func (l exportLine) event() (fieldpass.AuditEvent, error) {
	ev := fieldpass.AuditEvent{Seq: l.Seq, At: l.At.UTC(), Actor: l.Actor, Action: l.Action, Target: l.Target}
	var err error
	if ev.PrevHash, err = hex.DecodeString(l.PrevHash); err != nil {
		return ev, fmt.Errorf("event %d: prev_hash: %w", l.Seq, err)
	}
	if ev.Hash, err = hex.DecodeString(l.Hash); err != nil {
		return ev, fmt.Errorf("event %d: hash: %w", l.Seq, err)
	}
	if len(l.Details) > 0 {
		if err := json.Unmarshal(l.Details, &ev.Details); err != nil {
			return ev, fmt.Errorf("event %d: details: %w", l.Seq, err)
		}
	}
	return ev, nil
}

func (l exportLine) checkpoint() (fieldpass.AuditCheckpoint, error) {
	cp := fieldpass.AuditCheckpoint{Seq: l.Seq, At: l.At.UTC()}
	var err error
	if cp.Hash, err = hex.DecodeString(l.Hash); err != nil {
		return cp, fmt.Errorf("checkpoint at seq %d: hash: %w", l.Seq, err)
	}
	if cp.PublicKey, err = base64.StdEncoding.DecodeString(l.PublicKey); err != nil {
		return cp, fmt.Errorf("checkpoint at seq %d: public_key: %w", l.Seq, err)
	}
	if cp.Signature, err = base64.StdEncoding.DecodeString(l.Signature); err != nil {
		return cp, fmt.Errorf("checkpoint at seq %d: signature: %w", l.Seq, err)
	}
	return cp, nil
}

// readExport calls fn with each line of the export in path.
func readExport(path string, fn func(exportLine) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var l exportLine
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		switch l.Type {
		case "header":
			if l.Format != exportFormat {
				return fmt.Errorf("%s:%d: unknown export format %q, want %s", path, n, l.Format, exportFormat)
			}
			if l.SinceSeq < 1 {
				return fmt.Errorf("%s:%d: since_seq %d: want 1 or more", path, n, l.SinceSeq)
			}
		case "event", "checkpoint":
		default:
			return fmt.Errorf("%s:%d: unknown line type %q", path, n, l.Type)
		}
		if err := fn(l); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
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
		return nil, usageError{msg: "--public-key: want a 32-byte ed25519 public key in base64, or a file holding one"}
	}
	return k, nil
}
