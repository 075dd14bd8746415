package fieldpass

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// AuditEvent is one entry of the audit log: who did what to what, when. The
// log is append-only and hash-chained: each event's Hash covers its contents
// and the previous event's Hash, so editing, inserting or removing an event
// anywhere but at the end breaks every later link. Removing events at the
// end is caught by signed checkpoints (AuditCheckpoint) kept elsewhere.
type AuditEvent struct {
	Seq    int64     // 1, 2, 3, ... without gaps; assigned by the store
	At     time.Time // UTC, microsecond precision; assigned by the store
	Actor  string    // "operator:root@host", "device:pump-7", "broker:ID"
	Action string    // "enrollment_token.create", "device.enroll", "device.disable", ...
	Target string    // what was acted on, e.g. "device:pump-7"
	// Details is any further context as a JSON object. It never holds a
	// secret (a token, a key): the log is read by auditors and exported.
	Details  map[string]any
	PrevHash []byte // Hash of event Seq-1; AuditGenesisHash for Seq 1
	Hash     []byte // AuditHash of this event
}

// Audit actions recorded by Fieldpass.
const (
	AuditTokenCreate        = "enrollment_token.create"
	AuditDeviceEnroll       = "device.enroll"
	AuditDeviceDisable      = "device.disable"
	AuditDeviceEnable       = "device.enable"
	AuditDeviceDecommission = "device.decommission"
	AuditDeviceKeepalive    = "device.keepalive"
)

// AuditFilter selects audit events for a store's AuditEvents. Zero fields
// select everything.
type AuditFilter struct {
	Since  time.Time // events at or after
	Until  time.Time // events before
	Actor  string    // exactly this actor
	Action string    // exactly this action
	Target string    // exactly this target
	// AfterSeq skips events up to and including this seq, for paging.
	AfterSeq int64
	// Limit is the most events returned, oldest first. Default and maximum
	// 1000.
	Limit int
}

const (
	auditHashDomain          = "fieldpass-audit-event-v1\n"
	auditCheckpointDomain    = "fieldpass-audit-checkpoint-v1\n"
	maxAuditFieldLen         = 1024
	maxAuditDetailsLen       = 64 << 10
	auditHashLen             = sha256.Size
	auditCheckpointKeyLength = ed25519.PublicKeySize
)

// AuditGenesisHash is the PrevHash of the first event: 32 zero bytes.
var AuditGenesisHash = make([]byte, auditHashLen)

// ValidateAuditEvent checks the fields a caller supplies (Actor, Action,
// Target, Details) before anything is written.
func ValidateAuditEvent(e AuditEvent) error {
	for _, f := range []struct{ name, v string }{{"actor", e.Actor}, {"action", e.Action}, {"target", e.Target}} {
		if f.v == "" && f.name != "target" {
			return Errorf(EINVALID, "audit event: empty %s", f.name)
		}
		if len(f.v) > maxAuditFieldLen {
			return Errorf(EINVALID, "audit event: %s longer than %d bytes", f.name, maxAuditFieldLen)
		}
		for _, r := range f.v {
			if r < 0x20 || r == 0x7f {
				return Errorf(EINVALID, "audit event: %s %q has a control character", f.name, f.v)
			}
		}
	}
	d, err := CanonicalAuditDetails(e.Details)
	if err != nil {
		return err
	}
	if len(d) > maxAuditDetailsLen {
		return Errorf(EINVALID, "audit event: details longer than %d bytes", maxAuditDetailsLen)
	}
	if bytes.Contains(d, []byte(`\u0000`)) {
		return Errorf(EINVALID, "audit event: details contain a NUL character")
	}
	return nil
}

// CanonicalAuditDetails returns the canonical JSON of details, the form the
// hash covers and the store keeps:
//
//   - the value is decoded as generic JSON (objects, arrays, strings,
//     float64 numbers, booleans, null) and encoded again by Go's
//     encoding/json with HTML escaping off: object keys sorted bytewise, no
//     whitespace, numbers in the shortest form that round-trips a float64
//     (1e21 and up, and below 1e-6, in exponent form);
//   - a nil or empty map is "{}".
//
// Canonicalising is idempotent, and survives a trip through a Postgres jsonb
// column and back, so a verifier can recompute it from what it reads.
func CanonicalAuditDetails(details map[string]any) ([]byte, error) {
	if len(details) == 0 {
		return []byte("{}"), nil
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return nil, Errorf(EINVALID, "audit event: details are not JSON: %v", err)
	}
	return CanonicalAuditJSON(raw)
}

// CanonicalAuditJSON canonicalises details given as JSON text (an object or
// null); see CanonicalAuditDetails.
func CanonicalAuditJSON(raw []byte) ([]byte, error) {
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, Errorf(EINVALID, "audit event: details are not a JSON object: %v", err)
	}
	if len(v) == 0 {
		return []byte("{}"), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, Errorf(EINVALID, "audit event: details: %v", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// AuditHash computes the hash of e from Seq, At, Actor, Action, Target,
// Details and PrevHash (its own Hash field is ignored). It is SHA-256 over
// this byte string, every integer big-endian, with no separators:
//
//	"fieldpass-audit-event-v1\n"            25 bytes of domain separation
//	seq                                     int64
//	at                                      int64, Unix time in microseconds (UTC)
//	len(actor)   actor                      uint32, then UTF-8 bytes
//	len(action)  action                     uint32, then UTF-8 bytes
//	len(target)  target                     uint32, then UTF-8 bytes
//	len(details) details                    uint32, then the canonical JSON
//	                                        (CanonicalAuditDetails)
//	prev_hash                               32 bytes (AuditGenesisHash for seq 1)
//
// Every variable-length field carries its length, so no two events encode to
// the same bytes.
func AuditHash(e AuditEvent) ([]byte, error) {
	details, err := CanonicalAuditDetails(e.Details)
	if err != nil {
		return nil, err
	}
	return auditHash(e, details)
}

func auditHash(e AuditEvent, canonicalDetails []byte) ([]byte, error) {
	if len(e.PrevHash) != auditHashLen {
		return nil, fmt.Errorf("audit event %d: prev_hash is %d bytes, want %d", e.Seq, len(e.PrevHash), auditHashLen)
	}
	h := sha256.New()
	var n [8]byte
	h.Write([]byte(auditHashDomain))
	binary.BigEndian.PutUint64(n[:], uint64(e.Seq))
	h.Write(n[:])
	binary.BigEndian.PutUint64(n[:], uint64(e.At.UnixMicro()))
	h.Write(n[:])
	for _, b := range [][]byte{[]byte(e.Actor), []byte(e.Action), []byte(e.Target), canonicalDetails} {
		binary.BigEndian.PutUint32(n[:4], uint32(len(b)))
		h.Write(n[:4])
		h.Write(b)
	}
	h.Write(e.PrevHash)
	return h.Sum(nil), nil
}

// AuditChainError names the first broken link of an audit chain.
type AuditChainError struct {
	Seq     int64  // the first event that does not check out
	Problem string // what is wrong with it
}

func (e *AuditChainError) Error() string {
	return fmt.Sprintf("audit chain broken at seq %d: %s", e.Seq, e.Problem)
}

// AuditChain checks events handed to it in order, one at a time, so that a
// log of any length is verified in constant memory. The zero value expects
// the chain from its start (seq 1, prev_hash AuditGenesisHash); Anchor
// starts it further on.
type AuditChain struct {
	started  bool
	next     int64
	prev     []byte
	anchored bool
	checked  int64
}

// Anchor makes the chain accept seq as its first event and trust that
// event's PrevHash, for a partial export that starts after seq 1.
func (c *AuditChain) Anchor(seq int64) {
	c.anchored = true
	c.next = seq
}

// Add checks e against its own contents and the previous event. It returns
// an *AuditChainError at the first broken link; once broken, the chain stays
// broken.
func (c *AuditChain) Add(e AuditEvent) error {
	if !c.started {
		c.started = true
		if !c.anchored {
			c.next, c.prev = 1, AuditGenesisHash
		}
	}
	if e.Seq != c.next {
		if c.next == 1 && !c.anchored {
			return &AuditChainError{Seq: e.Seq, Problem: "the log does not start at seq 1: earlier events are missing"}
		}
		return &AuditChainError{Seq: c.next, Problem: fmt.Sprintf("missing: the next event found is seq %d", e.Seq)}
	}
	want, err := AuditHash(e)
	if err != nil {
		return &AuditChainError{Seq: e.Seq, Problem: err.Error()}
	}
	if !bytes.Equal(want, e.Hash) {
		return &AuditChainError{Seq: e.Seq, Problem: "hash does not match the event's contents (the event was edited)"}
	}
	if c.prev != nil && !bytes.Equal(e.PrevHash, c.prev) {
		return &AuditChainError{Seq: e.Seq, Problem: fmt.Sprintf("prev_hash does not match the hash of seq %d (the chain was cut or rewritten)", e.Seq-1)}
	}
	c.prev = e.Hash
	c.next++
	c.checked++
	return nil
}

// Checked is the number of events that checked out.
func (c *AuditChain) Checked() int64 { return c.checked }

// Last returns the seq and hash of the last event that checked out. Before
// any, it is 0 and nil, or for an anchored chain the seq before the anchor.
func (c *AuditChain) Last() (int64, []byte) {
	if c.checked == 0 {
		if c.anchored {
			return c.next - 1, nil
		}
		return 0, nil
	}
	return c.next - 1, c.prev
}

// CheckCheckpoints checks, after the events have been added, each
// checkpoint's hash against the event it names, looked up with hashOf (nil,
// nil for an event outside the part of the log at hand). Signatures are the
// caller's business (AuditCheckpoint.Verify). A checkpoint beyond the chain's last
// event means events were removed from the end.
func (c *AuditChain) CheckCheckpoints(cps []AuditCheckpoint, hashOf func(seq int64) ([]byte, error)) error {
	last, _ := c.Last()
	for _, cp := range cps {
		if cp.Seq > last {
			return &AuditChainError{Seq: last + 1, Problem: fmt.Sprintf(
				"missing: a checkpoint signed %s covers events up to seq %d, but the log ends at seq %d (events were removed from the end)",
				cp.At.UTC().Format(time.RFC3339), cp.Seq, last)}
		}
		h, err := hashOf(cp.Seq)
		if err != nil {
			return fmt.Errorf("checkpoint at seq %d: %w", cp.Seq, err)
		}
		if h == nil {
			continue // before the part of the log at hand
		}
		if string(h) != string(cp.Hash) {
			return &AuditChainError{Seq: cp.Seq, Problem: fmt.Sprintf(
				"hash differs from the checkpoint signed %s (the chain was rewritten)", cp.At.UTC().Format(time.RFC3339))}
		}
	}
	return nil
}

// AuditCheckpoint is a signed statement that event Seq of the log had Hash.
// Kept outside the database (in exports), it catches a log that was cut
// short or rewritten whole after it was made: a rewritten chain cannot
// reproduce the signed hash without the broker's checkpoint key.
type AuditCheckpoint struct {
	ID        int64
	Seq       int64
	Hash      []byte
	At        time.Time // when it was signed; UTC, microseconds
	PublicKey ed25519.PublicKey
	Signature []byte
}

// AuditCheckpointMessage is what a checkpoint's signature covers:
//
//	"fieldpass-audit-checkpoint-v1\n"   30 bytes of domain separation
//	seq                                 int64, big-endian
//	hash                                32 bytes
//	at                                  int64, big-endian, Unix microseconds
func AuditCheckpointMessage(seq int64, hash []byte, at time.Time) []byte {
	m := make([]byte, 0, len(auditCheckpointDomain)+8+len(hash)+8)
	m = append(m, auditCheckpointDomain...)
	m = binary.BigEndian.AppendUint64(m, uint64(seq))
	m = append(m, hash...)
	m = binary.BigEndian.AppendUint64(m, uint64(at.UnixMicro()))
	return m
}

// SignAuditCheckpoint signs (seq, hash, at) with key.
func SignAuditCheckpoint(key ed25519.PrivateKey, seq int64, hash []byte, at time.Time) AuditCheckpoint {
	at = at.UTC().Truncate(time.Microsecond)
	return AuditCheckpoint{
		Seq:       seq,
		Hash:      hash,
		At:        at,
		PublicKey: key.Public().(ed25519.PublicKey),
		Signature: ed25519.Sign(key, AuditCheckpointMessage(seq, hash, at)),
	}
}

// Verify checks the checkpoint's signature against pub (not against the
// public key it carries, which anyone could have put there).
func (c AuditCheckpoint) Verify(pub ed25519.PublicKey) error {
	if len(pub) != auditCheckpointKeyLength {
		return Errorf(EINVALID, "checkpoint public key is %d bytes, want %d", len(pub), auditCheckpointKeyLength)
	}
	if len(c.Hash) != auditHashLen || !ed25519.Verify(pub, AuditCheckpointMessage(c.Seq, c.Hash, c.At), c.Signature) {
		return fmt.Errorf("checkpoint at seq %d (signed %s): bad signature for key %s", c.Seq, c.At.UTC().Format(time.RFC3339), base64.StdEncoding.EncodeToString(pub))
	}
	return nil
}

// auditEventJSON is an audit event on the wire: snake_case keys like every
// other API body, hashes in hex as verifiers and the CLI show them.
type auditEventJSON struct {
	Seq      int64          `json:"seq"`
	At       time.Time      `json:"at"`
	Actor    string         `json:"actor"`
	Action   string         `json:"action"`
	Target   string         `json:"target"`
	Details  map[string]any `json:"details"`
	PrevHash string         `json:"prev_hash"`
	Hash     string         `json:"hash"`
}

// MarshalJSON writes e in the API's dialect (auditEventJSON).
func (e AuditEvent) MarshalJSON() ([]byte, error) {
	d := e.Details
	if d == nil {
		d = map[string]any{}
	}
	return json.Marshal(auditEventJSON{Seq: e.Seq, At: e.At.UTC(), Actor: e.Actor, Action: e.Action, Target: e.Target,
		Details: d, PrevHash: hex.EncodeToString(e.PrevHash), Hash: hex.EncodeToString(e.Hash)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *AuditEvent) UnmarshalJSON(b []byte) error {
	var j auditEventJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	prev, err := hex.DecodeString(j.PrevHash)
	if err != nil {
		return fmt.Errorf("audit event %d: prev_hash: %w", j.Seq, err)
	}
	hash, err := hex.DecodeString(j.Hash)
	if err != nil {
		return fmt.Errorf("audit event %d: hash: %w", j.Seq, err)
	}
	*e = AuditEvent{Seq: j.Seq, At: j.At, Actor: j.Actor, Action: j.Action, Target: j.Target,
		Details: j.Details, PrevHash: prev, Hash: hash}
	return nil
}
