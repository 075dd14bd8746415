package fieldpass_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

var exportEpoch = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// chain returns n events chained from seq 1, as the store would write them.
func chain(tb testing.TB, n int) []fieldpass.AuditEvent {
	tb.Helper()
	evs := make([]fieldpass.AuditEvent, n)
	prev := fieldpass.AuditGenesisHash
	for i := range evs {
		ev := fieldpass.AuditEvent{
			Seq: int64(i + 1), At: exportEpoch.Add(time.Duration(i) * time.Minute),
			Actor: "operator:root@host", Action: fieldpass.AuditDeviceDisable, Target: fmt.Sprintf("device:pump-%d", i),
			Details: map[string]any{"to": "disabled", "note": "<&>"}, PrevHash: prev,
		}
		h, err := fieldpass.AuditHash(ev)
		if err != nil {
			tb.Fatal(err)
		}
		ev.Hash, prev = h, h
		evs[i] = ev
	}
	return evs
}

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// export writes an export of evs from since on, with checkpoints signed by
// key at the given seqs.
func export(tb testing.TB, evs []fieldpass.AuditEvent, since int64, key ed25519.PrivateKey, at ...int64) []byte {
	tb.Helper()
	var b bytes.Buffer
	w := fieldpass.NewAuditExportWriter(&b)
	if err := w.WriteHeader(since, exportEpoch); err != nil {
		tb.Fatal(err)
	}
	for _, seq := range at {
		if err := w.WriteCheckpoint(fieldpass.SignAuditCheckpoint(key, seq, evs[seq-1].Hash, exportEpoch.Add(time.Hour))); err != nil {
			tb.Fatal(err)
		}
	}
	for _, ev := range evs[since-1:] {
		if err := w.WriteEvent(ev); err != nil {
			tb.Fatal(err)
		}
	}
	return b.Bytes()
}

// files opens exports held in memory.
type files map[string][]byte

func (f files) open(name string) (io.ReadCloser, error) {
	b, ok := f[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func TestAuditExportRoundTrip(t *testing.T) {
	key := testKey(1)
	evs := chain(t, 3)
	b := export(t, evs, 1, key, 2)
	if !bytes.Contains(b, []byte(`"details":{"note":"<&>","to":"disabled"}`)) {
		t.Errorf("details not canonical, or HTML-escaped:\n%s", b)
	}
	var types []string
	var got []fieldpass.AuditEvent
	err := fieldpass.ReadAuditExport(bytes.NewReader(b), "x.jsonl", func(l fieldpass.AuditExportLine) error {
		types = append(types, l.Type)
		switch l.Type {
		case "checkpoint":
			cp, err := l.Checkpoint()
			if err != nil {
				return err
			}
			return cp.Verify(key.Public().(ed25519.PublicKey))
		case "event":
			ev, err := l.Event()
			got = append(got, ev)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "header checkpoint event event event"; strings.Join(types, " ") != want {
		t.Errorf("lines: got %v, want %s", types, want)
	}
	var c fieldpass.AuditChain
	for _, ev := range got {
		if err := c.Add(ev); err != nil {
			t.Fatalf("read back: %v", err)
		}
	}
}

func TestVerifyAuditExport(t *testing.T) {
	key := testKey(1)
	pub := key.Public().(ed25519.PublicKey)
	evs := chain(t, 5)
	old := export(t, evs, 1, key, 3, 5)

	edited := bytes.Replace(old, []byte(`"device:pump-2"`), []byte(`"device:pump-9"`), 1)
	cut := export(t, evs[:3], 1, key)
	rewritten := chain(t, 5)
	rewritten[4].Target = "device:elsewhere"
	rewritten[4].Hash, _ = fieldpass.AuditHash(rewritten[4])
	exports := files{
		"old.jsonl":       old,
		"partial.jsonl":   export(t, evs, 4, key, 3, 5),
		"edited.jsonl":    edited,
		"cut.jsonl":       cut,
		"rewritten.jsonl": export(t, rewritten, 1, testKey(1)),
		"empty.jsonl":     export(t, evs[:0], 1, key),
		"blank.jsonl":     append([]byte("\n  \n"), old...),
	}
	for _, tc := range []struct {
		name    string
		older   []string
		pub     ed25519.PublicKey
		want    fieldpass.AuditExportSummary
		wantErr string // a part of the error; "" for none
	}{
		{name: "old.jsonl", want: fieldpass.AuditExportSummary{Events: 5, First: 1, Last: 5, Checkpoints: 2}},
		{name: "blank.jsonl", want: fieldpass.AuditExportSummary{Events: 5, First: 1, Last: 5, Checkpoints: 2}},
		{name: "empty.jsonl", want: fieldpass.AuditExportSummary{}},
		// Checkpoints before the export's start cannot be checked there.
		{name: "partial.jsonl", want: fieldpass.AuditExportSummary{Events: 2, First: 4, Last: 5, Checkpoints: 1}},
		{name: "old.jsonl", pub: testKey(2).Public().(ed25519.PublicKey), wantErr: "old.jsonl: checkpoint at seq 3"},
		{name: "edited.jsonl", wantErr: "edited.jsonl: audit chain broken at seq 3: hash does not match"},
		{name: "cut.jsonl", want: fieldpass.AuditExportSummary{Events: 3, First: 1, Last: 3}},
		{name: "cut.jsonl", older: []string{"old.jsonl"}, wantErr: "audit chain broken at seq 4: missing: a checkpoint signed"},
		{name: "rewritten.jsonl", older: []string{"old.jsonl"}, wantErr: "audit chain broken at seq 5: hash differs from the checkpoint"},
		{name: "gone.jsonl", wantErr: "open gone.jsonl: file does not exist"},
	} {
		t.Run(tc.name+" "+strings.Join(tc.older, " "), func(t *testing.T) {
			p := pub
			if tc.pub != nil {
				p = tc.pub
			}
			got, err := fieldpass.VerifyAuditExport(exports.open, tc.name, tc.older, p)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Errorf("got %+v, want %+v", got, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
			var ce *fieldpass.AuditChainError
			if isChain := errors.As(err, &ce); isChain != strings.Contains(tc.wantErr, "audit chain broken") {
				t.Errorf("got %T, chain error: %v", err, isChain)
			}
		})
	}
}

func TestReadAuditExportRefuses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"type":"header","format":"fieldpass-audit-export-v2","since_seq":1,"at":"2030-06-01T12:00:00Z"}`, `x:1: unknown export format "fieldpass-audit-export-v2"`},
		{`{"type":"header","format":"fieldpass-audit-export-v1","since_seq":0,"at":"2030-06-01T12:00:00Z"}`, "x:1: since_seq 0: want 1 or more"},
		{"\n" + `{"type":"comment","at":"2030-06-01T12:00:00Z"}`, `x:2: unknown line type "comment"`},
		{`{"type":"event","at":"2030-06-01T12:00:00Z","extra":1}`, `x:1: json: unknown field "extra"`},
		{`{"type":"event"`, "x:1: unexpected EOF"},
		{strings.Repeat(" ", 1<<20+1), "x: bufio.Scanner: token too long"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			err := fieldpass.ReadAuditExport(strings.NewReader(tc.in), "x", func(fieldpass.AuditExportLine) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// An export comes from wherever it was kept: whatever it holds, verifying
// it must not panic, and what checks out must be a run of events without
// gaps.
func FuzzVerifyAuditExport(f *testing.F) {
	key := testKey(1)
	f.Add(export(f, chain(f, 3), 1, key, 2))
	f.Add(export(f, chain(f, 3), 2, key, 1, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		open := files{"x": b}.open
		sum, err := fieldpass.VerifyAuditExport(open, "x", nil, key.Public().(ed25519.PublicKey))
		if err != nil {
			return
		}
		if sum.Events > 0 && sum.Last-sum.First+1 != sum.Events {
			t.Fatalf("checked %d events from seq %d to %d", sum.Events, sum.First, sum.Last)
		}
	})
}
