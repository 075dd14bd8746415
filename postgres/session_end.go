package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// Session ends are written in groups, as opens are (session_open.go): each
// end appends session.end to the one audit chain.

// endReq is one session end asked for, and the session as it ended.
type endReq struct {
	id                string
	end               time.Time
	bytesIn, bytesOut int64
	reason            fieldpass.EndReason
	details           map[string]any

	out    *fieldpass.Session
	updErr error
}

// endSessions ends es in one transaction: BEGIN and each end's update
// (which locks the session's row), then the session.end event of each
// session it ended and COMMIT. The updates go in the order of the
// sessions' ids, so that two groups never wait on each other's rows.
//
// An end whose update changed nothing (the session ended already, by an
// earlier end of this group or another, or was never opened) is answered
// after the group with the session as it ended, or not found. Should the
// second round trip fail with more than one end in it, each end of the
// group is tried again alone, in a group of one.
func (db *DB) endSessions(ctx context.Context, es []*endReq) []error {
	errs := make([]error, len(es))
	order := make([]int, len(es))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(es[a].id, es[b].id) })

	p, err := db.pipeline(ctx)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	defer p.close()
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	for _, i := range order {
		e := es[i]
		b.Queue(`
			UPDATE sessions SET ended_at = GREATEST($2, started_at), bytes_in = $3, bytes_out = $4, end_reason = $5
			WHERE id = $1::uuid AND ended_at IS NULL
			RETURNING `+sessionColumns,
			e.id, e.end, e.bytesIn, e.bytesOut, string(e.reason)).QueryRow(func(r pgx.Row) error {
			e.out, e.updErr = scanSession(r)
			return ignoreNoRows(e.updErr)
		})
	}
	if err := p.run(ctx, b); err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("end session: %w", err)
		}
		return errs
	}
	var (
		ended   []int // in chain order
		noRow   []int // nothing to update: ended already, or never opened
		retry   []int // tried again alone, in a group of one
		results []func() (fieldpass.AuditEvent, error)
	)
	for _, i := range order {
		if errors.Is(es[i].updErr, pgx.ErrNoRows) {
			noRow = append(noRow, i)
		} else {
			ended = append(ended, i)
		}
	}
	b = &pgx.Batch{}
	for k, i := range ended {
		appended, err := db.queueAudit(b, sessionEndEvent(es[i].out, es[i].details))
		if err != nil {
			// Its update must not commit without its event: the group
			// rolls back, and the others are tried alone.
			errs[i] = err
			retry = slices.Delete(slices.Clone(ended), k, k+1)
			ended = nil
			break
		}
		results = append(results, appended)
	}
	if len(ended) > 0 {
		b.Queue("COMMIT")
		if err := p.run(ctx, b); err != nil {
			if len(es) == 1 {
				errs[ended[0]] = fmt.Errorf("end session: %w", err)
				return errs
			}
			retry, ended = ended, nil
		}
	}
	p.close() // committed or rolled back: the row locks are free
	for k, i := range ended {
		if _, err := results[k](); err != nil {
			errs[i] = err
		}
	}
	for _, i := range retry {
		errs[i] = db.endSessions(ctx, es[i:i+1])[0]
	}
	for _, i := range noRow {
		// The session as its first end left it (the update waited for
		// that end's commit), or not found.
		e := es[i]
		e.out, errs[i] = scanSession(db.pool.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1::uuid`, e.id))
		if errors.Is(errs[i], pgx.ErrNoRows) {
			errs[i] = fieldpass.Errorf(fieldpass.ENOTFOUND, "session %s not found", e.id)
		}
	}
	return errs
}
