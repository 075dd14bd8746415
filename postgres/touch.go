package postgres

import (
	"context"
	"fmt"
	"time"
)

// TouchDevices sets last_seen of many connected devices in one statement:
// the broker refreshes its whole fleet about once a minute, and a statement
// per device would cost thousands of round trips.
func (db *DB) TouchDevices(ctx context.Context, deviceIDs []string, at time.Time) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	_, err := db.pool.Exec(ctx, `UPDATE devices SET last_seen = $2 WHERE id = ANY($1::uuid[]) AND (last_seen IS NULL OR last_seen < $2)`, deviceIDs, at)
	if err != nil {
		return fmt.Errorf("touch %d devices: %w", len(deviceIDs), err)
	}
	return nil
}
