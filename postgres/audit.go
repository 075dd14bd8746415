package postgres

// The audit log (migrations/00002_audit.sql) is append-only and hash-chained.
//
// Appending: AppendAuditTx calls the SQL function audit_append
// (migrations/00019_audit_append.sql), which takes the transaction-scoped
// advisory lock 7381506946083943473 ("fpaudit1"), reads the newest event,
// and inserts the next one with seq = newest.seq+1 (1 for the first),
// at = the store's clock (never before the newest event's), prev_hash =
// newest.hash (32 zero bytes for the first) and hash as below; the broker
// recomputes the hash and refuses a difference. The lock is held until the
// transaction ends, so appends take turns, seq has no gaps, and an event
// never chains to one that was rolled back. One statement does all of it,
// so the lock is never held across a round trip before the commit.
//
// The hash of an event is SHA-256 over this byte string (integers
// big-endian, fields back to back):
//
//	"fieldpass-audit-event-v1\n"   25 bytes of domain separation
//	seq                            int64
//	at                             int64: Unix time in microseconds, UTC
//	len(actor), actor              uint32 byte length, then the UTF-8 bytes
//	len(action), action            uint32, bytes
//	len(target), target            uint32, bytes
//	len(details), details          uint32, then the canonical JSON of details:
//	                               re-encoded by Go's encoding/json from its
//	                               generic form (keys sorted bytewise, no
//	                               whitespace, numbers as the shortest float64
//	                               round trip, HTML escaping off); {} if empty
//	prev_hash                      32 bytes
//
// fieldpass.AuditHash computes it; fieldpass.AuditChain checks a sequence of
// events, here (VerifyAudit) and offline (fieldpass-broker audit verify
// --file). Checkpoints sign (seq, hash, at) of an event with the broker's
// ed25519 key; see fieldpass.AuditCheckpointMessage.

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// auditBatch is how many events a scan reads per query.
const auditBatch = 5000

// AppendAudit appends e to the audit log in a transaction of its own and
// returns it with Seq, At, PrevHash and Hash filled in. Only Actor, Action,
// Target and Details are taken from e.
func (db *DB) AppendAudit(ctx context.Context, e fieldpass.AuditEvent) (fieldpass.AuditEvent, error) {
	var out fieldpass.AuditEvent
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var err error
		out, err = db.AppendAuditTx(ctx, tx, e)
		return err
	})
	return out, err
}

// AppendAuditTx appends e inside tx, so that the event commits, or not,
// together with the change it records. Call it last in the transaction:
// from here to commit, every other append waits. tx must be READ COMMITTED
// (pgx's default): a REPEATABLE READ snapshot taken before the lock would
// not see the newest event, and the insert would fail on a duplicate seq.
func (db *DB) AppendAuditTx(ctx context.Context, tx pgx.Tx, e fieldpass.AuditEvent) (fieldpass.AuditEvent, error) {
	if err := fieldpass.ValidateAuditEvent(e); err != nil {
		return fieldpass.AuditEvent{}, err
	}
	details, err := fieldpass.CanonicalAuditDetails(e.Details)
	if err != nil {
		return fieldpass.AuditEvent{}, err
	}
	// Details go back to the caller as they will read back: canonical.
	if e, err = withCanonicalDetails(e, details); err != nil {
		return fieldpass.AuditEvent{}, err
	}
	// One statement takes the chain's lock, chains and inserts
	// (migrations/00019_audit_append.sql); the lock is held from here to
	// the commit.
	err = tx.QueryRow(ctx, `SELECT seq, at, prev_hash, hash FROM audit_append($1, $2, $3, $4, $5)`,
		e.Actor, e.Action, e.Target, string(details), db.now()).Scan(&e.Seq, &e.At, &e.PrevHash, &e.Hash)
	if err != nil {
		return fieldpass.AuditEvent{}, fmt.Errorf("append audit event: %w", err)
	}
	e.At = e.At.UTC()
	if err := checkAuditHash(e); err != nil {
		return fieldpass.AuditEvent{}, err
	}
	return e, nil
}

const maxAuditPage = 1000

// AuditEvents returns the events f selects, in seq order.
func (db *DB) AuditEvents(ctx context.Context, f fieldpass.AuditFilter) ([]fieldpass.AuditEvent, error) {
	if f.Limit < 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid limit %d", f.Limit)
	}
	if f.Limit == 0 || f.Limit > maxAuditPage {
		f.Limit = maxAuditPage
	}
	var where []string
	args := []any{f.AfterSeq}
	where = append(where, "seq > $1")
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if !f.Since.IsZero() {
		add("at >= $%d", f.Since)
	}
	if !f.Until.IsZero() {
		add("at < $%d", f.Until)
	}
	if f.Actor != "" {
		add("actor = $%d", f.Actor)
	}
	if f.Action != "" {
		add("action = $%d", f.Action)
	}
	if f.Target != "" {
		add("target = $%d", f.Target)
	}
	args = append(args, f.Limit)
	q := `SELECT ` + auditColumns + ` FROM audit_events WHERE ` + strings.Join(where, " AND ") +
		fmt.Sprintf(` ORDER BY seq LIMIT $%d`, len(args))
	return db.queryAudit(ctx, q, args...)
}

// auditColumns are read by scanAuditEvent, in this order.
const auditColumns = `seq, at, actor, action, target, details::text, prev_hash, hash`

func scanAuditEvent(row pgx.Row) (fieldpass.AuditEvent, error) {
	var e fieldpass.AuditEvent
	var details string
	if err := row.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Target, &details, &e.PrevHash, &e.Hash); err != nil {
		return e, err
	}
	e.At = e.At.UTC()
	if err := json.Unmarshal([]byte(details), &e.Details); err != nil {
		return e, fmt.Errorf("audit event %d: details: %w", e.Seq, err)
	}
	if len(e.Details) == 0 {
		e.Details = nil
	}
	return e, nil
}

func (db *DB) queryAudit(ctx context.Context, q string, args ...any) ([]fieldpass.AuditEvent, error) {
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (fieldpass.AuditEvent, error) {
		return scanAuditEvent(row)
	})
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	return evs, nil
}

// ScanAudit calls fn with every event whose seq is at least fromSeq, in seq
// order, reading them in batches so that memory does not grow with the
// log. Events appended while it runs are included. An error from fn stops
// the scan and is returned as is.
func (db *DB) ScanAudit(ctx context.Context, fromSeq int64, fn func(fieldpass.AuditEvent) error) error {
	after := fromSeq - 1
	for {
		batch, err := db.queryAudit(ctx,
			`SELECT `+auditColumns+` FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2`, after, auditBatch)
		if err != nil {
			return err
		}
		for _, e := range batch {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(batch) < auditBatch {
			return nil
		}
		after = batch[len(batch)-1].Seq
	}
}

// VerifyAudit recomputes the hash of every event in seq order and checks
// each link to the previous event, then checks that every checkpoint stored
// in the database names an event that exists and has the signed hash. It
// returns the number of events checked and, if the log does not check out,
// a *fieldpass.AuditChainError naming the first broken link (the seq, and
// whether its hash or its link to the previous event is wrong).
//
// Signatures are not checked here (that needs the public key; see
// fieldpass.AuditCheckpoint.Verify). A log cut short at its end checks out
// here unless a checkpoint beyond the cut survives: keep exports.
func (db *DB) VerifyAudit(ctx context.Context) (checked int64, err error) {
	c, err := db.verifyAudit(ctx)
	return c.Checked(), err
}

func (db *DB) verifyAudit(ctx context.Context) (*fieldpass.AuditChain, error) {
	var chain fieldpass.AuditChain
	if err := db.ScanAudit(ctx, 1, chain.Add); err != nil {
		return &chain, err
	}
	cps, err := db.AuditCheckpoints(ctx, 0)
	if err != nil {
		return &chain, err
	}
	if err := chain.CheckCheckpoints(cps, func(seq int64) ([]byte, error) {
		var h []byte
		err := db.pool.QueryRow(ctx, `SELECT hash FROM audit_events WHERE seq = $1`, seq).Scan(&h)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil
		}
		return h, err
	}); err != nil {
		return &chain, err
	}
	return &chain, nil
}

// CheckpointAudit verifies the log, signs (seq, hash, now) of the newest
// event that checked out with key, stores the checkpoint and returns it. It
// refuses to sign a log that does not check out, or an empty one.
func (db *DB) CheckpointAudit(ctx context.Context, key ed25519.PrivateKey) (fieldpass.AuditCheckpoint, error) {
	if len(key) != ed25519.PrivateKeySize {
		return fieldpass.AuditCheckpoint{}, fieldpass.Errorf(fieldpass.EINVALID, "invalid checkpoint key")
	}
	chain, err := db.verifyAudit(ctx)
	if err != nil {
		return fieldpass.AuditCheckpoint{}, fmt.Errorf("refusing to sign the audit log: %w", err)
	}
	seq, hash := chain.Last()
	if seq == 0 {
		return fieldpass.AuditCheckpoint{}, fieldpass.Errorf(fieldpass.ECONFLICT, "the audit log is empty: nothing to sign")
	}
	cp := fieldpass.SignAuditCheckpoint(key, seq, hash, db.now())
	err = db.pool.QueryRow(ctx, `
		INSERT INTO audit_checkpoints (seq, hash, at, public_key, signature)
		VALUES ($1, $2, $3, $4, $5) RETURNING id`,
		cp.Seq, cp.Hash, cp.At, []byte(cp.PublicKey), cp.Signature).Scan(&cp.ID)
	if err != nil {
		return fieldpass.AuditCheckpoint{}, fmt.Errorf("store audit checkpoint: %w", err)
	}
	return cp, nil
}

// AuditCheckpoints returns the stored checkpoints for events at or after
// fromSeq, oldest first.
func (db *DB) AuditCheckpoints(ctx context.Context, fromSeq int64) ([]fieldpass.AuditCheckpoint, error) {
	rows, err := db.pool.Query(ctx, `
		SELECT id, seq, hash, at, public_key, signature FROM audit_checkpoints
		WHERE seq >= $1 ORDER BY id`, fromSeq)
	if err != nil {
		return nil, fmt.Errorf("list audit checkpoints: %w", err)
	}
	cps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (fieldpass.AuditCheckpoint, error) {
		var cp fieldpass.AuditCheckpoint
		var pub []byte
		err := row.Scan(&cp.ID, &cp.Seq, &cp.Hash, &cp.At, &pub, &cp.Signature)
		cp.At = cp.At.UTC()
		cp.PublicKey = pub
		return cp, err
	})
	if err != nil {
		return nil, fmt.Errorf("list audit checkpoints: %w", err)
	}
	return cps, nil
}
