package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
)

var _ alerts.DeadLetterStore = (*DB)(nil)

const (
	maxAlertIDLen    = 64
	maxAlertKindLen  = 64
	maxAlertErrorLen = 1000
)

// RecordAlertDeadLetter appends an alert the broker gave up delivering. A
// second record of the same delivery id is ignored: the first one stands.
func (db *DB) RecordAlertDeadLetter(ctx context.Context, d alerts.DeadLetter) error {
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
