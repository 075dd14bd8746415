package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

const (
	maxAlertIDLen    = 64
	maxAlertKindLen  = 64
	maxAlertErrorLen = 1000
)

// RecordAlertDeadLetter appends an alert the broker gave up delivering. A
// second record of the same delivery id is ignored: the first one stands.
func (db *DB) RecordAlertDeadLetter(ctx context.Context, d fieldpass.DeadLetter) error {
	if d.ID == "" || len(d.ID) > maxAlertIDLen || d.Kind == "" || len(d.Kind) > maxAlertKindLen {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid alert dead letter %q of kind %q", d.ID, d.Kind)
	}
	if !json.Valid(d.Payload) {
		return fieldpass.Errorf(fieldpass.EINVALID, "alert %s: payload is not JSON", d.ID)
	}
	lastErr := d.LastError
	if len(lastErr) > maxAlertErrorLen {
		lastErr = lastErr[:maxAlertErrorLen]
	}
	if d.FailedAt.IsZero() {
		d.FailedAt = db.now()
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = d.FailedAt
	}
	_, err := db.pool.Exec(ctx, `
		INSERT INTO alert_dead_letters (id, kind, payload, attempts, last_error, created_at, failed_at)
		VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)
		ON CONFLICT (id) DO NOTHING`,
		d.ID, string(d.Kind), string(d.Payload), d.Attempts, lastErr, d.CreatedAt, d.FailedAt)
	if err != nil {
		return fmt.Errorf("record dead letter of alert %s: %w", d.ID, err)
	}
	return nil
}

// AlertDeadLetters returns the dead letters f selects, newest failure
// first, each with its replays.
func (db *DB) AlertDeadLetters(ctx context.Context, f fieldpass.DeadLetterFilter) ([]*fieldpass.DeadLetter, error) {
	if f.Limit < 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid limit %d", f.Limit)
	}
	var ids []string // nil: any
	if len(f.IDs) > 0 {
		ids = f.IDs
	}
	var limit *int
	if f.Limit > 0 {
		limit = &f.Limit
	}
	rows, err := db.pool.Query(ctx, `
		SELECT d.id, d.kind, d.payload::text, d.attempts, d.last_error, d.created_at, d.failed_at,
		       r.n, r.last
		FROM alert_dead_letters d
		CROSS JOIN LATERAL (SELECT count(*) AS n, max(replayed_at) AS last
		                    FROM alert_replays WHERE dead_letter_id = d.id) r
		WHERE ($1::text[] IS NULL OR d.id = ANY($1::text[]))
		  AND d.failed_at >= $2
		  AND (NOT $3 OR r.n = 0)
		ORDER BY d.failed_at DESC, d.id DESC
		LIMIT $4`, ids, f.Since, f.Unreplayed, limit)
	if err != nil {
		return nil, fmt.Errorf("alert dead letters: %w", err)
	}
	letters, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*fieldpass.DeadLetter, error) {
		var d fieldpass.DeadLetter
		var kind, payload string
		var last *time.Time
		if err := row.Scan(&d.ID, &kind, &payload, &d.Attempts, &d.LastError, &d.CreatedAt, &d.FailedAt, &d.Replays, &last); err != nil {
			return nil, err
		}
		d.Kind, d.Payload = fieldpass.AlertKind(kind), []byte(payload)
		d.CreatedAt, d.FailedAt = d.CreatedAt.UTC(), d.FailedAt.UTC()
		if last != nil {
			d.ReplayedAt = last.UTC()
		}
		return &d, nil
	})
	if err != nil {
		return nil, fmt.Errorf("alert dead letters: %w", err)
	}
	return letters, nil
}

// RecordAlertReplay records that actor re-delivered the dead letter id to
// webhook (its scheme and host only: see alerts.Redact), and the audit
// event alert.replay, in one transaction. Call it after the webhook
// accepted the delivery.
func (db *DB) RecordAlertReplay(ctx context.Context, actor, id, webhook string) error {
	if err := checkActor(actor); err != nil {
		return err
	}
	if err := validateText("webhook", webhook, maxAlertErrorLen); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var kind, device string
		err := tx.QueryRow(ctx, `SELECT kind, coalesce(payload->>'device', '') FROM alert_dead_letters WHERE id = $1`, id).Scan(&kind, &device)
		if errors.Is(err, pgx.ErrNoRows) {
			return fieldpass.Errorf(fieldpass.ENOTFOUND, "no alert dead letter %q", id)
		}
		if err != nil {
			return fmt.Errorf("replay of alert %s: %w", id, err)
		}
		at := db.now()
		if _, err := tx.Exec(ctx, `INSERT INTO alert_replays (dead_letter_id, replayed_at, actor, webhook) VALUES ($1, $2, $3, $4)`,
			id, at, actor, webhook); err != nil {
			return fmt.Errorf("record replay of alert %s: %w", id, err)
		}
		details := map[string]any{"kind": kind, "webhook": webhook}
		if device != "" {
			details["device"] = device
		}
		if _, err := db.AppendAuditTx(ctx, tx, fieldpass.AuditEvent{
			Actor: actor, Action: fieldpass.AuditAlertReplay, Target: "alert:" + id, Details: details,
		}); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		return nil
	})
}

// LastPresenceEvents returns the newest online or offline event of each
// of the devices (by id) that has one. The broker reads it at start to tell
// whether the offline episode of a device was alerted already.
func (db *DB) LastPresenceEvents(ctx context.Context, deviceIDs []string) (map[string]*fieldpass.DeviceEvent, error) {
	out := map[string]*fieldpass.DeviceEvent{}
	if len(deviceIDs) == 0 {
		return out, nil
	}
	for _, id := range deviceIDs {
		if !uuidRE.MatchString(id) {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", id)
		}
	}
	// One index walk (device_events_device_at) per device.
	rows, err := db.pool.Query(ctx, `
		SELECT e.id, e.device_id::text, e.at, e.kind, e.broker_id, e.details
		FROM unnest($1::uuid[]) AS d(id)
		CROSS JOIN LATERAL (SELECT * FROM device_events
		                    WHERE device_id = d.id AND kind IN ('online', 'offline')
		                    ORDER BY at DESC, id DESC LIMIT 1) e`, deviceIDs)
	if err != nil {
		return nil, fmt.Errorf("last presence events: %w", err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*fieldpass.DeviceEvent, error) {
		var e fieldpass.DeviceEvent
		var kind string
		if err := row.Scan(&e.ID, &e.DeviceID, &e.At, &kind, &e.BrokerID, &e.Details); err != nil {
			return nil, err
		}
		e.Kind, e.At = fieldpass.DeviceEventKind(kind), e.At.UTC()
		return &e, nil
	})
	if err != nil {
		return nil, fmt.Errorf("last presence events: %w", err)
	}
	for _, e := range evs {
		out[e.DeviceID] = e
	}
	return out, nil
}
