package fieldpass

import (
	"bufio"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// An audit export is the audit log as JSON lines, one object per line: a
// header, the checkpoints, then the events in seq order. It is kept where
// the database's administrators cannot write, and verified offline with
// VerifyAuditExport, which needs nothing but this package. Hashes are hex,
// keys and signatures base64, times RFC 3339 in UTC with microseconds.

// AuditExportFormat names the format in an export's header line.
const AuditExportFormat = "fieldpass-audit-export-v1"

// AuditExportLine is one line of an audit export. Type says which of the
// other fields it uses: "header" (Format, SinceSeq, At), "checkpoint" or
// "event".
type AuditExportLine struct {
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

// AuditExportWriter writes an audit export: WriteHeader first, then the
// checkpoints, then the events in seq order. It does not buffer.
type AuditExportWriter struct {
	enc *json.Encoder
}

// NewAuditExportWriter returns a writer of export lines to w.
func NewAuditExportWriter(w io.Writer) *AuditExportWriter {
	enc := json.NewEncoder(w)
	// Details are kept byte for byte as hashed; escaping <, > and & would
	// only make them harder to read.
	enc.SetEscapeHTML(false)
	return &AuditExportWriter{enc: enc}
}

// WriteHeader writes the header of an export of the events from seq since
// on, made at at.
func (w *AuditExportWriter) WriteHeader(since int64, at time.Time) error {
	return w.enc.Encode(AuditExportLine{Type: "header", Format: AuditExportFormat, SinceSeq: since, At: at.UTC()})
}

// WriteCheckpoint writes a checkpoint line; a checkpoint written alone is
// how "audit checkpoint" hands one out.
func (w *AuditExportWriter) WriteCheckpoint(cp AuditCheckpoint) error {
	return w.enc.Encode(AuditExportLine{
		Type: "checkpoint", Seq: cp.Seq, At: cp.At.UTC(), Hash: hex.EncodeToString(cp.Hash),
		PublicKey: base64.StdEncoding.EncodeToString(cp.PublicKey), Signature: base64.StdEncoding.EncodeToString(cp.Signature),
	})
}

// WriteEvent writes an event line, its details in canonical form.
func (w *AuditExportWriter) WriteEvent(ev AuditEvent) error {
	d, err := CanonicalAuditDetails(ev.Details)
	if err != nil {
		return err
	}
	return w.enc.Encode(AuditExportLine{
		Type: "event", Seq: ev.Seq, At: ev.At.UTC(), Actor: ev.Actor, Action: ev.Action, Target: ev.Target,
		Details: d, PrevHash: hex.EncodeToString(ev.PrevHash), Hash: hex.EncodeToString(ev.Hash),
	})
}

// Event decodes an event line.
func (l AuditExportLine) Event() (AuditEvent, error) {
	ev := AuditEvent{Seq: l.Seq, At: l.At.UTC(), Actor: l.Actor, Action: l.Action, Target: l.Target}
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

// Checkpoint decodes a checkpoint line. Its signature is not checked here
// (AuditCheckpoint.Verify).
func (l AuditExportLine) Checkpoint() (AuditCheckpoint, error) {
	cp := AuditCheckpoint{Seq: l.Seq, At: l.At.UTC()}
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

// ReadAuditExport calls fn with each line of the export read from r, after
// checking its type (and a header's format). Errors name the export as
// name, with the line number where there is one. A line may be at most
// 1 MiB; blank lines are skipped.
func ReadAuditExport(r io.Reader, name string, fn func(AuditExportLine) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var l AuditExportLine
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
		switch l.Type {
		case "header":
			if l.Format != AuditExportFormat {
				return fmt.Errorf("%s:%d: unknown export format %q, want %s", name, n, l.Format, AuditExportFormat)
			}
			if l.SinceSeq < 1 {
				return fmt.Errorf("%s:%d: since_seq %d: want 1 or more", name, n, l.SinceSeq)
			}
		case "event", "checkpoint":
		default:
			return fmt.Errorf("%s:%d: unknown line type %q", name, n, l.Type)
		}
		if err := fn(l); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// AuditExportSummary is what VerifyAuditExport checked.
type AuditExportSummary struct {
	Events      int64 // events whose hashes and links checked out
	First, Last int64 // their seqs (0, 0 for none)
	Checkpoints int   // checkpoints checked against the events
}

// VerifyAuditExport checks the export called name against its own
// checkpoints and those of the older exports, all of which must be signed
// by pub: every hash and link of its events, then every checkpoint at or
// after its first event. open opens an export by name (os.Open, for
// files); it is called twice for name, once for its checkpoints and once
// for its events, so that memory does not grow with the log. A broken
// chain is an *AuditChainError.
func VerifyAuditExport(open func(name string) (io.ReadCloser, error), name string, older []string, pub ed25519.PublicKey) (AuditExportSummary, error) {
	var sum AuditExportSummary
	var cps []AuditCheckpoint
	var since int64 = 1
	for _, p := range append(append([]string{}, older...), name) {
		err := readAuditExportFile(open, p, func(l AuditExportLine) error {
			switch l.Type {
			case "header":
				if p == name {
					since = l.SinceSeq
				}
			case "checkpoint":
				cp, err := l.Checkpoint()
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
			return sum, err
		}
	}
	want := map[int64][]byte{}
	for _, cp := range cps {
		want[cp.Seq] = nil
	}
	var chain AuditChain
	if since > 1 {
		chain.Anchor(since)
	}
	err := readAuditExportFile(open, name, func(l AuditExportLine) error {
		if l.Type != "event" {
			return nil
		}
		ev, err := l.Event()
		if err != nil {
			return err
		}
		if err := chain.Add(ev); err != nil {
			return err
		}
		if _, ok := want[ev.Seq]; ok {
			want[ev.Seq] = ev.Hash
		}
		if sum.First == 0 {
			sum.First = ev.Seq
		}
		return nil
	})
	if err != nil {
		return sum, err
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
		return sum, err
	}
	sum.Events = chain.Checked()
	sum.Last, _ = chain.Last()
	sum.Checkpoints = len(cps)
	return sum, nil
}

func readAuditExportFile(open func(string) (io.ReadCloser, error), name string, fn func(AuditExportLine) error) error {
	f, err := open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return ReadAuditExport(f, name, fn)
}
