package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// SessionTarget is the audit target naming a session.
func SessionTarget(id string) string { return "session:" + id }

// BrokerActor is the audit actor naming a broker: "broker:ID".
func BrokerActor(brokerID string) string {
	if brokerID == "" {
		return "broker"
	}
	return "broker:" + brokerID
}

const maxClientAddrLen = 255

const sessionColumns = `id::text, user_email, device_name, device_id::text, service, grant_id::text,
	client_addr, broker_id, started_at, ended_at, bytes_in, bytes_out, end_reason, coalesce(token_id::text, ''),
	device_reconnects, streams_cut, served_by`

func scanSession(row pgx.Row) (*fieldpass.Session, error) {
	var (
		s       fieldpass.Session
		endedAt *time.Time
		reason  *string
	)
	err := row.Scan(&s.ID, &s.User, &s.Device, &s.DeviceID, &s.Service, &s.GrantID,
		&s.ClientAddr, &s.BrokerID, &s.Start, &endedAt, &s.BytesIn, &s.BytesOut, &reason, &s.TokenID,
		&s.DeviceReconnects, &s.StreamsCut, &s.ServedBy)
	if err != nil {
		return nil, err
	}
	s.Start = s.Start.UTC()
	if endedAt != nil {
		s.End = endedAt.UTC()
	}
	s.EndReason = fieldpass.EndReason(deref(reason))
	return &s, nil
}

// OpenSession records the start of a session and commits it before
// returning: the broker opens the stream only after this returns without
// error (fail closed). It takes s.User (email), s.Device (name), s.Service,
// s.GrantID, s.ClientAddr and s.BrokerID; the store sets ID and Start (now).
//
// In its transaction it checks, under a share lock on the grant (so a
// revocation waits for this commit, and its notification follows it), that
// the user exists and is enabled, the device is live and active, and the
// grant covers them now. It records session.start by the user. Refused:
// invalid input; not_found for an unknown user, device or grant;
// forbidden for a disabled user or device, or a grant that does not cover
// the session.
func (db *DB) OpenSession(ctx context.Context, s fieldpass.Session) (*fieldpass.Session, error) {
	email, err := fieldpass.NormalizeEmail(s.User)
	if err != nil {
		return nil, err
	}
	if err := fieldpass.ValidateDeviceName(s.Device); err != nil {
		return nil, err
	}
	if err := fieldpass.ValidateServiceName(s.Service); err != nil {
		return nil, err
	}
	if !uuidRE.MatchString(s.GrantID) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid grant id %q", s.GrantID)
	}
	if err := validateText("client address", s.ClientAddr, maxClientAddrLen); err != nil {
		return nil, err
	}
	if err := validateText("broker id", s.BrokerID, maxBrokerIDLen); err != nil {
		return nil, err
	}
	if err := validateText("serving broker id", s.ServedBy, maxBrokerIDLen); err != nil {
		return nil, err
	}
	if s.TokenID != "" && !uuidRE.MatchString(s.TokenID) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid token id %q", s.TokenID)
	}
	c := &openCheck{s: s, email: email}
	if err := db.opens.do(ctx, c, func(ctx context.Context, cs []*openCheck) []error {
		return db.openSessions(ctx, cs, db.now())
	}); err != nil {
		return nil, wrap(err, "open session")
	}
	return c.out, nil
}

// ignoreNoRows lets a batch go on past a read that found nothing; the
// caller turns that into its refusal.
func ignoreNoRows(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	return err
}

// EndSession records the end of session id: at end (zero for now; never
// before its start), the bytes each way, and why. It is idempotent: the
// first end recorded wins, and a later call returns the session as that
// first end left it, changing and recording nothing. The end is recorded as
// session.end by the broker that carries the session.
func (db *DB) EndSession(ctx context.Context, id string, end time.Time, bytesIn, bytesOut int64, reason fieldpass.EndReason) (*fieldpass.Session, error) {
	return db.EndSessionWith(ctx, id, end, bytesIn, bytesOut, reason, nil)
}

// EndSessionWith is EndSession with details added to the session.end
// audit event (the connector's error of a dial_failed end, say); they
// cannot replace the record's own fields.
func (db *DB) EndSessionWith(ctx context.Context, id string, end time.Time, bytesIn, bytesOut int64, reason fieldpass.EndReason, details map[string]any) (*fieldpass.Session, error) {
	if !uuidRE.MatchString(id) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid session id %q", id)
	}
	if err := fieldpass.ValidateEndReason(reason); err != nil {
		return nil, err
	}
	if bytesIn < 0 || bytesOut < 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "negative byte count")
	}
	if end.IsZero() {
		end = db.now()
	}
	end = end.UTC().Truncate(time.Microsecond)
	e := &endReq{id: id, end: end, bytesIn: bytesIn, bytesOut: bytesOut, reason: reason, details: details}
	if err := db.ends.do(ctx, e, db.endSessions); err != nil {
		return nil, wrap(err, "end session "+id)
	}
	return e.out, nil
}

func (db *DB) auditSessionEnd(ctx context.Context, tx pgx.Tx, s *fieldpass.Session, extra map[string]any) error {
	e := sessionEndEvent(s, extra)
	return db.audit(ctx, tx, e.Actor, e.Action, e.Target, e.Details)
}

// sessionEndEvent is the session.end audit event of s, with extra details
// that cannot replace the record's own fields.
func sessionEndEvent(s *fieldpass.Session, extra map[string]any) fieldpass.AuditEvent {
	details := map[string]any{}
	for k, v := range extra {
		details[k] = v
	}
	for k, v := range map[string]any{
		"user": s.User, "device": s.Device, "service": s.Service, "grant_id": s.GrantID,
		"reason": string(s.EndReason), "bytes_in": s.BytesIn, "bytes_out": s.BytesOut,
		"duration": s.End.Sub(s.Start).String(),
	} {
		details[k] = v
	}
	return fieldpass.AuditEvent{Actor: BrokerActor(s.BrokerID), Action: fieldpass.AuditSessionEnd, Target: SessionTarget(s.ID), Details: details}
}

// AllBrokers makes CloseOpenSessions close the open sessions of every
// broker: for a single-broker install, or an operator's clean-up.
const AllBrokers = "*"

// CloseOpenSessions ends, now and with reason, every open session of
// brokerID (AllBrokers for every broker), and returns how many it ended. A
// broker calls it at start-up with its own id and fieldpass.EndBrokerRestart:
// sessions it carried died with its previous run. Byte counts stay as last
// recorded. Each end is recorded as session.end.
func (db *DB) CloseOpenSessions(ctx context.Context, brokerID string, reason fieldpass.EndReason) (int, error) {
	if brokerID == "" {
		return 0, fieldpass.Errorf(fieldpass.EINVALID, "empty broker id: give the broker's id, or AllBrokers")
	}
	if err := fieldpass.ValidateEndReason(reason); err != nil {
		return 0, err
	}
	if brokerID != AllBrokers {
		if err := validateText("broker id", brokerID, maxBrokerIDLen); err != nil {
			return 0, err
		}
	}
	now := db.now()
	var n int
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			UPDATE sessions SET ended_at = GREATEST($2, started_at), end_reason = $3
			WHERE ended_at IS NULL AND ($1 = '*' OR broker_id = $1)
			RETURNING `+sessionColumns, brokerID, now, string(reason))
		closed, err := collectRows(rows, err, "close sessions", scanSession)
		if err != nil {
			return err
		}
		for _, s := range closed {
			if err := db.auditSessionEnd(ctx, tx, s, nil); err != nil {
				return err
			}
		}
		n = len(closed)
		return nil
	})
	if err != nil {
		return 0, wrap(err, "close open sessions")
	}
	return n, nil
}

// Session returns the session with id.
func (db *DB) Session(ctx context.Context, id string) (*fieldpass.Session, error) {
	if !uuidRE.MatchString(id) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid session id %q", id)
	}
	s, err := scanSession(db.pool.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1::uuid`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "session %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	return s, nil
}

const maxSessionPage = 1000

// Sessions returns the sessions f selects, newest first.
func (db *DB) Sessions(ctx context.Context, f fieldpass.SessionFilter) ([]*fieldpass.Session, error) {
	limit, err := pageLimit(f.Limit, maxSessionPage)
	if err != nil {
		return nil, err
	}
	var w filter
	if f.Device != "" {
		if err := fieldpass.ValidateDeviceName(f.Device); err != nil {
			return nil, err
		}
		w.add("device_name = $?", f.Device)
	}
	if f.User != "" {
		email, err := fieldpass.NormalizeEmail(f.User)
		if err != nil {
			return nil, err
		}
		w.add("user_email = $?", email)
	}
	if f.Service != "" {
		if err := fieldpass.ValidateServiceName(f.Service); err != nil {
			return nil, err
		}
		w.add("service = $?", f.Service)
	}
	if f.GrantID != "" {
		if !uuidRE.MatchString(f.GrantID) {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid grant id %q", f.GrantID)
		}
		w.add("grant_id = $?::uuid", f.GrantID)
	}
	if !f.Since.IsZero() {
		w.add("started_at >= $?", f.Since)
	}
	if !f.Until.IsZero() {
		w.add("started_at < $?", f.Until)
	}
	if f.Open {
		w.conds = append(w.conds, "ended_at IS NULL")
	}
	if f.EndReason != "" {
		if err := fieldpass.ValidateEndReason(f.EndReason); err != nil {
			return nil, err
		}
		w.add("end_reason = $?", string(f.EndReason))
	}
	q := `SELECT ` + sessionColumns + ` FROM sessions WHERE ` + w.where() + ` ORDER BY started_at DESC, id` + w.limit(limit)
	rows, err := db.pool.Query(ctx, q, w.args...)
	return collectRows(rows, err, "list sessions", scanSession)
}

// SessionBytes is a live session's byte counts so far.
type SessionBytes struct {
	ID      string
	In, Out int64
}

// SessionBytesSoFar writes the byte counts of open sessions, in one
// statement, so that their rows show what they carried so far. Counts only
// grow, and an ended row is left as its end recorded it: a late write
// never undoes the final counts.
func (db *DB) SessionBytesSoFar(ctx context.Context, bs []SessionBytes) error {
	if len(bs) == 0 {
		return nil
	}
	ids := make([]string, len(bs))
	ins := make([]int64, len(bs))
	outs := make([]int64, len(bs))
	for i, b := range bs {
		if !uuidRE.MatchString(b.ID) || b.In < 0 || b.Out < 0 {
			return fieldpass.Errorf(fieldpass.EINVALID, "invalid byte counts for session %q", b.ID)
		}
		ids[i], ins[i], outs[i] = b.ID, b.In, b.Out
	}
	_, err := db.pool.Exec(ctx, `
		UPDATE sessions s SET bytes_in = GREATEST(s.bytes_in, x.bin), bytes_out = GREATEST(s.bytes_out, x.bout)
		FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS x(id, bin, bout)
		WHERE s.id = x.id AND s.ended_at IS NULL
		  AND (s.bytes_in < x.bin OR s.bytes_out < x.bout)`, ids, ins, outs)
	if err != nil {
		return wrap(err, "write live byte counts")
	}
	return nil
}
