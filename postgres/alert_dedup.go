package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// ClaimAlert claims, for one broker of the fleet, the alert of kind about
// subject (alerts.Claims; migrations/00025_alert_claims.sql): it reports
// true, and records alertID as sent now, only if no alert of that kind
// about that subject was claimed within window before, by the database's
// clock. Of brokers claiming the same event at once, the row lock lets
// exactly one win.
func (db *DB) ClaimAlert(ctx context.Context, kind fieldpass.AlertKind, subject, alertID string, window time.Duration) (bool, error) {
	if kind == "" || len(kind) > 64 || subject == "" || len(subject) > 255 || len(alertID) > 64 {
		return false, fieldpass.Errorf(fieldpass.EINVALID, "alert claim: kind, subject or id empty or too long")
	}
	if window <= 0 {
		return false, fieldpass.Errorf(fieldpass.EINVALID, "alert claim: window %s is not positive", window)
	}
	var ok bool
	err := db.pool.QueryRow(ctx, `
		INSERT INTO alert_claims AS c (kind, subject, sent_at, alert_id) VALUES ($1, $2, now(), $3)
		ON CONFLICT (kind, subject) DO UPDATE SET sent_at = excluded.sent_at, alert_id = excluded.alert_id
			WHERE c.sent_at <= now() - $4::bigint * interval '1 microsecond'
		RETURNING true`, string(kind), subject, alertID, window.Microseconds()).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim alert %s about %s: %w", kind, subject, err)
	}
	return ok, nil
}
