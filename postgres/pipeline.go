package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fieldpass/fieldpass"
)

// A pipeline is a transaction sent as batches of statements, each batch one
// round trip: BEGIN travels with the first batch, COMMIT with the last. The
// hot writes (a session's start and end, each with its audit event) take
// two round trips this way instead of one per statement, and the chain's
// lock, taken by audit_append in the last batch, is held only while the
// server runs that batch: never across a round trip to the broker.
type pipeline struct {
	conn *pgxpool.Conn
}

// pipeline takes a connection from the pool for a transaction.
func (db *DB) pipeline(ctx context.Context) (*pipeline, error) {
	c, err := db.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return &pipeline{conn: c}, nil
}

// run sends b and runs the callbacks queued on it, in order; the first
// error (a statement's or a callback's) is returned.
func (p *pipeline) run(ctx context.Context, b *pgx.Batch) error {
	return p.conn.SendBatch(ctx, b).Close()
}

// close rolls back what did not commit and returns the connection. A
// connection whose rollback fails is closed rather than reused. Closing
// again does nothing.
func (p *pipeline) close() {
	if p.conn == nil {
		return
	}
	defer func() { p.conn = nil }()
	if p.conn.Conn().PgConn().TxStatus() != 'I' {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := p.conn.Exec(ctx, "ROLLBACK"); err != nil {
			p.conn.Conn().Close(ctx)
		}
		cancel()
	}
	p.conn.Release()
}

// queueAudit queues the append of e on b (call it last before COMMIT: the
// chain's lock is held from there to the end of the transaction) and
// returns a function that gives the appended event once b has run.
func (db *DB) queueAudit(b *pgx.Batch, e fieldpass.AuditEvent) (func() (fieldpass.AuditEvent, error), error) {
	if err := fieldpass.ValidateAuditEvent(e); err != nil {
		return nil, err
	}
	details, err := fieldpass.CanonicalAuditDetails(e.Details)
	if err != nil {
		return nil, err
	}
	e, err = withCanonicalDetails(e, details)
	if err != nil {
		return nil, err
	}
	var scanErr error = fmt.Errorf("append audit event: not run")
	b.Queue(`SELECT seq, at, prev_hash, hash FROM audit_append($1, $2, $3, $4, $5)`,
		e.Actor, e.Action, e.Target, string(details), db.now()).QueryRow(func(row pgx.Row) error {
		scanErr = row.Scan(&e.Seq, &e.At, &e.PrevHash, &e.Hash)
		return scanErr
	})
	return func() (fieldpass.AuditEvent, error) {
		if scanErr != nil {
			return fieldpass.AuditEvent{}, fmt.Errorf("append audit event: %w", scanErr)
		}
		e.At = e.At.UTC()
		if err := checkAuditHash(e); err != nil {
			return fieldpass.AuditEvent{}, err
		}
		return e, nil
	}, nil
}

// withCanonicalDetails gives e the details as they will read back.
func withCanonicalDetails(e fieldpass.AuditEvent, canonical []byte) (fieldpass.AuditEvent, error) {
	e.Details = nil
	if string(canonical) != "{}" {
		if err := json.Unmarshal(canonical, &e.Details); err != nil {
			return e, fmt.Errorf("append audit event: %w", err)
		}
	}
	return e, nil
}

// checkAuditHash compares the hash the database computed for e with ours,
// so that the two implementations of the chain cannot drift apart
// unnoticed. Inside a transaction (AppendAuditTx) a difference rolls it
// back; in a pipeline the check runs after the commit, so the difference is
// reported as an error here and flagged by every later verification.
func checkAuditHash(e fieldpass.AuditEvent) error {
	want, err := fieldpass.AuditHash(e)
	if err != nil {
		return fmt.Errorf("append audit event: %w", err)
	}
	if !bytes.Equal(want, e.Hash) {
		return fmt.Errorf("append audit event %d: the database's hash %x is not %x", e.Seq, e.Hash, want)
	}
	return nil
}

// newUUID returns a random (version 4) UUID, for rows whose id an audit
// event must name before the row's insert has answered.
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
