package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// Opening sessions in groups. Every open appends to the one audit chain,
// whose lock (audit_append) is held from the append to the commit, so opens
// run one after another however many arrive at once. OpenSession therefore
// queues its open, and one goroutine at a time takes all the opens waiting
// (up to maxGroup) into one transaction: the locking reads of every
// open in one round trip, then the inserts and audit events of those that
// hold and COMMIT in the next. The chain keeps its order (the events are
// appended in the transaction one after the other) and its tamper
// evidence; each open still returns only once its own row has committed.
// Alone, an open is a group of one: the same two round trips as before.

// openCheck is one open: the session asked for, what its locking reads
// found, and the session opened.
type openCheck struct {
	s     fieldpass.Session
	email string
	out   *fieldpass.Session

	tok                     *fieldpass.Token
	userID                  string
	disabled                bool
	dev                     *fieldpass.Device
	g                       *fieldpass.Grant
	tokErr, userErr, devErr error
	grantErr                error
	holder                  string
	leaseLive, leased       bool
}

// openSessions runs cs in one transaction: BEGIN and every open's locking
// reads (FOR SHARE on the token, user, device, grant and lease rows: a
// revocation or a disable waits for this commit, and its notification
// follows it), then the insert and session.start audit event of each open
// that holds, and COMMIT. It returns each open's session or refusal.
//
// Should the second round trip fail in a group of more than one (one
// open's row refused by a constraint, or a deadlock with a writer, which
// locks in a different order across opens than within one), every open
// that held is tried again alone, so that one open's failure is not
// another's.
func (db *DB) openSessions(ctx context.Context, cs []*openCheck, now time.Time) []error {
	errs := make([]error, len(cs))
	fail := func(err error) []error { // before any open was decided
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	p, err := db.pipeline(ctx)
	if err != nil {
		return fail(err)
	}
	defer p.close()

	b := &pgx.Batch{}
	b.Queue("BEGIN")
	queueOpenReads(b, cs)
	if err := p.run(ctx, b); err != nil {
		return fail(fmt.Errorf("check session: %w", err))
	}
	var held []int
	for i, c := range cs {
		if errs[i] = c.verdict(now); errs[i] == nil {
			held = append(held, i)
		}
	}
	// The writes of the opens that hold; an open whose writes cannot be
	// queued is refused and the batch made again without it, so that no
	// row goes without its event.
	var results []func() (*fieldpass.Session, error)
	for built := false; !built; {
		b, results, built = &pgx.Batch{}, nil, true
		for k, i := range held {
			res, err := db.queueOpenInsert(b, cs[i], now)
			if err != nil {
				errs[i] = err
				held = slices.Delete(held, k, k+1)
				built = false
				break
			}
			results = append(results, res)
		}
	}
	if len(held) == 0 {
		return errs // nothing to write: the rollback frees the locks
	}
	b.Queue("COMMIT")
	if err := p.run(ctx, b); err != nil {
		if len(cs) == 1 {
			errs[held[0]] = fmt.Errorf("insert session: %w", err)
			return errs
		}
		p.close() // roll back before the opens are tried alone
		for _, i := range held {
			errs[i] = db.openSessions(ctx, cs[i:i+1], now)[0]
		}
		return errs
	}
	for k, i := range held {
		cs[i].out, errs[i] = results[k]()
	}
	return errs
}

// queueOpenReads queues the locking reads of cs on b, table by table in
// the order a single open takes them (tokens, users, devices, grants,
// leases), so that a group takes its row locks in the order every open
// and every writer of those rows does.
func queueOpenReads(b *pgx.Batch, cs []*openCheck) {
	for _, c := range cs {
		if c.s.TokenID == "" {
			continue
		}
		b.Queue(`SELECT `+tokenColumns+` FROM tokens t JOIN users u ON u.id = t.user_id
			WHERE t.id = $1::uuid FOR SHARE OF t`, c.s.TokenID).QueryRow(func(r pgx.Row) error {
			c.tok, c.tokErr = scanToken(r)
			return ignoreNoRows(c.tokErr)
		})
	}
	for _, c := range cs {
		b.Queue(`SELECT id::text, disabled FROM users WHERE email = $1 FOR SHARE`, c.email).QueryRow(func(r pgx.Row) error {
			c.userErr = r.Scan(&c.userID, &c.disabled)
			return ignoreNoRows(c.userErr)
		})
	}
	for _, c := range cs {
		b.Queue(`SELECT `+deviceColumns+` FROM devices WHERE name = $1 AND state <> 'decommissioned' FOR SHARE`, c.s.Device).QueryRow(func(r pgx.Row) error {
			c.dev, c.devErr = scanDevice(r)
			return ignoreNoRows(c.devErr)
		})
	}
	for _, c := range cs {
		b.Queue(`SELECT `+grantColumns+` FROM grants g WHERE g.id = $1::uuid FOR SHARE`, c.s.GrantID).QueryRow(func(r pgx.Row) error {
			c.g, c.grantErr = scanGrant(r)
			return ignoreNoRows(c.grantErr)
		})
	}
	// Fencing (lease.go): where brokers hold devices by lease, only the
	// holder of the live lease opens a session on the device; the row is
	// locked, so a takeover waits for this commit.
	for _, c := range cs {
		b.Queue(`SELECT l.broker_id, l.expires_at > now() FROM device_leases l JOIN devices d ON d.id = l.device_id
			WHERE d.name = $1 AND d.state <> 'decommissioned' FOR SHARE OF l`, c.s.Device).QueryRow(func(r pgx.Row) error {
			err := r.Scan(&c.holder, &c.leaseLive)
			c.leased = err == nil
			return ignoreNoRows(err)
		})
	}
}

// verdict is the open's refusal from what its reads found, or nil.
func (c *openCheck) verdict(now time.Time) error {
	s, email := c.s, c.email
	if s.TokenID != "" {
		if errors.Is(c.tokErr, pgx.ErrNoRows) {
			return fieldpass.Errorf(fieldpass.ENOTFOUND, "token %s not found", s.TokenID)
		}
		if err := sessionTokenHolds(c.tok, s.TokenID, email, now); err != nil {
			return err
		}
	}
	if errors.Is(c.userErr, pgx.ErrNoRows) {
		return fieldpass.Errorf(fieldpass.ENOTFOUND, "user %s not found", email)
	}
	if c.disabled {
		return fieldpass.Errorf(fieldpass.EFORBIDDEN, "user %s is disabled", email)
	}
	if errors.Is(c.devErr, pgx.ErrNoRows) {
		return fieldpass.Errorf(fieldpass.ENOTFOUND, "device %q not found", s.Device)
	}
	if c.dev.State != fieldpass.DeviceActive {
		return fieldpass.Errorf(fieldpass.EFORBIDDEN, "device %s is %s", c.dev.Name, c.dev.State)
	}
	if errors.Is(c.grantErr, pgx.ErrNoRows) {
		return fieldpass.Errorf(fieldpass.ENOTFOUND, "grant %s not found", s.GrantID)
	}
	if c.leased && (c.holder != s.BrokerID || !c.leaseLive) {
		return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s is not held by this broker (%s) now: try again", c.dev.Name, s.BrokerID)
	}
	if c.g.Subject != email || !c.g.Covers(c.dev, s.Service, now) {
		return fieldpass.Errorf(fieldpass.EFORBIDDEN, "grant %s does not give %s access to %s on %s now", c.g.ID, email, s.Service, c.dev.Name)
	}
	return nil
}

// queueOpenInsert queues the session row of c and its session.start audit
// event, by the user, on b; the function it returns gives the session once
// b has run.
func (db *DB) queueOpenInsert(b *pgx.Batch, c *openCheck, now time.Time) (func() (*fieldpass.Session, error), error) {
	s, dev, g := c.s, c.dev, c.g
	id, err := newUUID()
	if err != nil {
		return nil, err
	}
	details := map[string]any{
		"device": dev.Name, "device_id": dev.ID, "service": s.Service, "grant_id": g.ID,
		"client": s.ClientAddr, "broker_id": s.BrokerID,
	}
	if s.TokenID != "" {
		details["token_id"] = s.TokenID
	}
	if s.ServedBy != "" {
		details["served_by"] = s.ServedBy
	}
	var (
		out     *fieldpass.Session
		scanErr = errors.New("insert session: not run")
	)
	b.Queue(`
		INSERT INTO sessions (id, user_id, user_email, device_id, device_name, service, grant_id, client_addr, broker_id, started_at, token_id, served_by)
		VALUES ($1::uuid, $2::uuid, $3, $4::uuid, $5, $6, $7::uuid, $8, $9, $10, NULLIF($11, '')::uuid, $12)
		RETURNING `+sessionColumns,
		id, c.userID, c.email, dev.ID, dev.Name, s.Service, g.ID, s.ClientAddr, s.BrokerID, now, s.TokenID, s.ServedBy).QueryRow(func(r pgx.Row) error {
		out, scanErr = scanSession(r)
		return scanErr
	})
	appended, err := db.queueAudit(b, fieldpass.AuditEvent{
		Actor: fieldpass.UserActor(c.email), Action: fieldpass.AuditSessionStart, Target: SessionTarget(id), Details: details,
	})
	if err != nil {
		return nil, err
	}
	return func() (*fieldpass.Session, error) {
		if scanErr != nil {
			return nil, scanErr
		}
		if _, err := appended(); err != nil {
			return nil, err
		}
		return out, nil
	}, nil
}
