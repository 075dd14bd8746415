package postgres

// The CLI's device logins in progress (migrations/00023_device_logins.sql),
// shared by every broker on the database: a login started on one broker is
// approved and polled on any. The rules of the flow (intervals, slow_down,
// who may approve) are the portal's (portal/login_device.go); the store
// keeps the rows, enforces the caps on starts across brokers, and locks a
// row while the portal decides what to do with it, so that two brokers
// answering two polls at once cannot both issue its token.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fieldpass/fieldpass"
)

// DeviceLoginStatus is where a device login stands.
type DeviceLoginStatus string

const (
	DeviceLoginPending  DeviceLoginStatus = "pending"
	DeviceLoginApproved DeviceLoginStatus = "approved"
	DeviceLoginDenied   DeviceLoginStatus = "denied"
	// DeviceLoginIssuing: a poll claimed the approved login and is issuing
	// its token; no other poll gets it.
	DeviceLoginIssuing DeviceLoginStatus = "issuing"
)

// DeviceLogin is one CLI login in progress.
type DeviceLogin struct {
	CodeHash [32]byte // SHA-256 of the secret device code, never the code
	UserCode string   // the code the person types, without the dash
	Started  time.Time
	Expires  time.Time
	Interval time.Duration // the least time between two polls
	LastPoll time.Time     // zero before the first poll
	Client   string        // the address that started it
	// ClientKey is the starting client's limiter key: the per-client cap
	// counts by it.
	ClientKey string
	Agent     string // the client's User-Agent, as it says of itself
	Status    DeviceLoginStatus
	// Set at approval: the approving person, their portal session's token
	// id, and what that session's login asserted.
	Email   string
	Session string
	MFA     bool
	AMR     []string
	ACR     string
}

// DeviceLoginLimits bound the logins in progress: PerClient for one
// ClientKey, Max in all.
type DeviceLoginLimits struct {
	Max       int
	PerClient int
}

// deviceLoginLockKey serialises starts across brokers, so that the caps
// hold: "fpdevlg1" in ASCII as a big-endian int64.
const deviceLoginLockKey int64 = 0x6670_6465_766c_6731

// StartDeviceLogin stores the new login d (Status pending) after making
// room for it: expired logins go; past lim.PerClient, the oldest pending
// login of d.ClientKey goes; past lim.Max, the oldest pending login of the
// client holding the most goes, so a flood evicts itself rather than
// everyone else. d.Started is the clock expiry is judged by. newUserCode
// gives d its UserCode, and another while a login in progress holds it.
// When nothing can go (every login is approved and waits for its poll)
// the answer is an unavailable error.
//
// A start is one round trip (a flood starts thousands): the transaction
// goes as one batch, each eviction a statement that does nothing when
// there is room; a start that inserted nothing then asks why.
func (db *DB) StartDeviceLogin(ctx context.Context, d *DeviceLogin, lim DeviceLoginLimits, newUserCode func() (string, error)) error {
	p, err := db.pipeline(ctx)
	if err != nil {
		return wrap(err, "start device login")
	}
	defer p.close()
	// Each try evicts at most one login past each cap; more than a few are
	// needed only if the caps were lowered since the logins started.
	for range 100 {
		code, err := newUserCode()
		if err != nil {
			return fmt.Errorf("start device login: user code: %w", err)
		}
		inserted := false
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue(`SELECT pg_advisory_xact_lock($1)`, deviceLoginLockKey)
		// A row locked by a poll or an approval is skipped, never waited
		// for: those lock a row, then its client's count, and a start
		// waiting for one while holding a count could deadlock with it.
		b.Queue(`
			DELETE FROM device_logins WHERE code_hash IN (
				SELECT code_hash FROM device_logins WHERE expires_at <= $1 FOR UPDATE SKIP LOCKED)`, d.Started)
		b.Queue(`
			DELETE FROM device_logins WHERE code_hash = (
				SELECT code_hash FROM device_logins WHERE client_key = $1 AND status = 'pending'
				ORDER BY started_at LIMIT 1 FOR UPDATE SKIP LOCKED)
			AND (SELECT logins FROM device_login_clients WHERE client_key = $1) >= $2`, d.ClientKey, lim.PerClient)
		// The victim is the oldest pending login of the client with the
		// most logins that has a pending one; between equals, the client
		// whose oldest pending login is oldest.
		b.Queue(`
			DELETE FROM device_logins WHERE code_hash = (
				SELECT code_hash FROM device_logins
				WHERE status = 'pending' AND client_key = (
					SELECT client_key FROM device_login_clients WHERE pending > 0
					ORDER BY logins DESC, oldest_pending LIMIT 1)
				ORDER BY started_at LIMIT 1 FOR UPDATE SKIP LOCKED)
			AND (SELECT coalesce(sum(logins), 0) FROM device_login_clients) >= $1`, lim.Max)
		b.Queue(`
			INSERT INTO device_logins (code_hash, user_code, started_at, expires_at, interval_ms, client, client_key, agent)
			SELECT $1, $2, $3, $4, $5, $6, $7, $8
			WHERE (SELECT coalesce(sum(logins), 0) FROM device_login_clients) < $9
			ON CONFLICT (user_code) DO NOTHING`,
			d.CodeHash[:], code, d.Started, d.Expires, d.Interval.Milliseconds(), d.Client, d.ClientKey, d.Agent, lim.Max).Exec(func(tag pgconn.CommandTag) error {
			inserted = tag.RowsAffected() == 1
			return nil
		})
		b.Queue("COMMIT")
		if err := p.run(ctx, b); err != nil {
			return wrap(err, "start device login")
		}
		if inserted {
			d.UserCode, d.Status = code, DeviceLoginPending
			return nil
		}
		var taken, pending bool
		if err := p.conn.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM device_logins WHERE user_code = $1),
			       EXISTS (SELECT 1 FROM device_logins WHERE status = 'pending')`, code).Scan(&taken, &pending); err != nil {
			return wrap(err, "start device login")
		}
		if !taken && !pending {
			break
		}
	}
	return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "too many logins in progress: try again in a few minutes")
}

// DeviceLoginChange is what to do with a device login once it has been
// looked at.
type DeviceLoginChange int

const (
	DeviceLoginKeep   DeviceLoginChange = iota // leave the row as it was
	DeviceLoginSave                            // write back the fields that change
	DeviceLoginDelete                          // forget the login
)

const deviceLoginColumns = `code_hash, user_code, started_at, expires_at, interval_ms, last_poll,
	client, client_key, agent, status, email, session_id, mfa, amr, acr`

// DeviceLoginByCode calls fn with the login whose device code hashes to
// codeHash (nil if there is none) while its row is locked, then keeps,
// saves or deletes it as fn says. What a save writes: Interval, LastPoll,
// Status and the approval's fields.
func (db *DB) DeviceLoginByCode(ctx context.Context, codeHash [32]byte, fn func(*DeviceLogin) DeviceLoginChange) error {
	if err := db.updateDeviceLogin(ctx, `code_hash = $1`, codeHash[:], fn); err != nil {
		return wrap(err, "device login")
	}
	return nil
}

// DeviceLoginByUserCode is DeviceLoginByCode for the login whose user code
// (without the dash) is userCode.
func (db *DB) DeviceLoginByUserCode(ctx context.Context, userCode string, fn func(*DeviceLogin) DeviceLoginChange) error {
	if err := db.updateDeviceLogin(ctx, `user_code = $1`, userCode, fn); err != nil {
		return wrap(err, "device login")
	}
	return nil
}

func (db *DB) updateDeviceLogin(ctx context.Context, where string, key any, fn func(*DeviceLogin) DeviceLoginChange) error {
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var d DeviceLogin
		var hash []byte
		var interval int64
		var last *time.Time
		err := tx.QueryRow(ctx, `SELECT `+deviceLoginColumns+` FROM device_logins WHERE `+where+` FOR UPDATE`, key).Scan(
			&hash, &d.UserCode, &d.Started, &d.Expires, &interval, &last,
			&d.Client, &d.ClientKey, &d.Agent, &d.Status, &d.Email, &d.Session, &d.MFA, &d.AMR, &d.ACR)
		if errors.Is(err, pgx.ErrNoRows) {
			fn(nil)
			return nil
		}
		if err != nil {
			return err
		}
		copy(d.CodeHash[:], hash)
		d.Interval = time.Duration(interval) * time.Millisecond
		if last != nil {
			d.LastPoll = *last
		}
		switch fn(&d) {
		case DeviceLoginSave:
			if d.AMR == nil {
				d.AMR = []string{}
			}
			var lastPoll *time.Time
			if !d.LastPoll.IsZero() {
				lastPoll = &d.LastPoll
			}
			_, err = tx.Exec(ctx, `
				UPDATE device_logins SET interval_ms = $2, last_poll = $3, status = $4,
					email = $5, session_id = $6, mfa = $7, amr = $8, acr = $9
				WHERE code_hash = $1`,
				hash, d.Interval.Milliseconds(), lastPoll, d.Status, d.Email, d.Session, d.MFA, d.AMR, d.ACR)
		case DeviceLoginDelete:
			_, err = tx.Exec(ctx, `DELETE FROM device_logins WHERE code_hash = $1`, hash)
		}
		return err
	})
}
