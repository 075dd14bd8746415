package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// The device reconnects a session lived through (broker/reconnect.go): an
// open session's row counts them (device_reconnects, streams_cut), and
// each return of the device is a session.device_reconnected event. The
// counts only grow, and an ended row is never touched (sessions_guard
// allows these two columns to change while the session is open, and only
// upwards).

// SessionDeviceReconnected records that the device of open session id came
// back after its tunnel dropped: the row's counts become at least r's, and
// a session.device_reconnected event by broker brokerID says how many
// streams the drop cut and how long the device was away, in one
// transaction. A session ended meanwhile is left as its end recorded it,
// and no event is written.
func (db *DB) SessionDeviceReconnected(ctx context.Context, id, brokerID string, r fieldpass.SessionReconnect) error {
	if err := checkReconnectCounts(id, r.Reconnects, r.StreamsCut); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var device string
		err := tx.QueryRow(ctx, `
			UPDATE sessions SET device_reconnects = GREATEST(device_reconnects, $2), streams_cut = GREATEST(streams_cut, $3)
			WHERE id = $1::uuid AND ended_at IS NULL
			RETURNING device_name`, id, r.Reconnects, r.StreamsCut).Scan(&device)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("count device reconnect: %w", err)
		}
		return db.audit(ctx, tx, BrokerActor(brokerID), fieldpass.AuditSessionDeviceReconnected, SessionTarget(id), map[string]any{
			"device":            device,
			"streams_cut":       max(r.Cut, 0),
			"away":              r.Away.String(),
			"device_reconnects": r.Reconnects,
			"streams_cut_total": r.StreamsCut,
		})
	})
	if err != nil {
		return wrap(err, "record device reconnect of session "+id)
	}
	return nil
}

// SessionReconnectCounts writes the counts of open session id (they only
// grow), without an event: the broker writes them before the end when a
// reconnect's own record did not get through, or a last drop cut streams.
func (db *DB) SessionReconnectCounts(ctx context.Context, id string, reconnects, streamsCut int) error {
	if err := checkReconnectCounts(id, reconnects, streamsCut); err != nil {
		return err
	}
	_, err := db.pool.Exec(ctx, `
		UPDATE sessions SET device_reconnects = GREATEST(device_reconnects, $2), streams_cut = GREATEST(streams_cut, $3)
		WHERE id = $1::uuid AND ended_at IS NULL
		  AND (device_reconnects < $2 OR streams_cut < $3)`, id, reconnects, streamsCut)
	if err != nil {
		return wrap(err, "write device reconnects of session "+id)
	}
	return nil
}

func checkReconnectCounts(id string, reconnects, streamsCut int) error {
	if !uuidRE.MatchString(id) {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid session id %q", id)
	}
	if reconnects < 0 || streamsCut < 0 {
		return fieldpass.Errorf(fieldpass.EINVALID, "negative reconnect count")
	}
	return nil
}
