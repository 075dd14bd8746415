package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// HostKey returns the SSH host key pinned for a device's service, or
// ENOTFOUND before the first use.
func (db *DB) HostKey(ctx context.Context, deviceID, service string) (*fieldpass.SSHHostKey, error) {
	if !uuidRE.MatchString(deviceID) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", deviceID)
	}
	k := fieldpass.SSHHostKey{DeviceID: deviceID, Service: service}
	err := db.pool.QueryRow(ctx, `SELECT key_type, key, fingerprint, pinned_at, pinned_by FROM ssh_host_keys
		WHERE device_id = $1::uuid AND service = $2`, deviceID, service).Scan(&k.Type, &k.Key, &k.Fingerprint, &k.PinnedAt, &k.PinnedBy)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "no host key pinned for %s", service)
	}
	if err != nil {
		return nil, fmt.Errorf("read host key: %w", err)
	}
	k.PinnedAt = k.PinnedAt.UTC()
	return &k, nil
}

// PinHostKey pins k if nothing is pinned for its device and service yet,
// audited; it returns what is pinned afterwards (k, or the key another
// session pinned first).
func (db *DB) PinHostKey(ctx context.Context, k fieldpass.SSHHostKey, device string) (*fieldpass.SSHHostKey, error) {
	if !uuidRE.MatchString(k.DeviceID) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", k.DeviceID)
	}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO ssh_host_keys (device_id, service, key_type, key, fingerprint, pinned_at, pinned_by)
			VALUES ($1::uuid, $2, $3, $4, $5, $6, $7) ON CONFLICT (device_id, service) DO NOTHING`,
			k.DeviceID, k.Service, k.Type, k.Key, k.Fingerprint, db.now(), k.PinnedBy)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		return db.audit(ctx, tx, k.PinnedBy, fieldpass.AuditHostKeyPin, "device:"+device,
			map[string]any{"service": k.Service, "fingerprint": k.Fingerprint, "type": k.Type})
	})
	if err != nil {
		return nil, fmt.Errorf("pin host key: %w", err)
	}
	return db.HostKey(ctx, k.DeviceID, k.Service)
}

// ForgetHostKey removes the pin of a device's service (an admin accepting a
// changed key: the next session pins what it sees), audited.
func (db *DB) ForgetHostKey(ctx context.Context, actor, deviceID, device, service string) error {
	old, err := db.HostKey(ctx, deviceID, service)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE ssh_host_keys SET key = '', fingerprint = '', key_type = '', pinned_at = $3, pinned_by = $4
			WHERE device_id = $1::uuid AND service = $2`, deviceID, service, db.now(), actor); err != nil {
			return err
		}
		return db.audit(ctx, tx, actor, fieldpass.AuditHostKeyAccept, "device:"+device,
			map[string]any{"service": service, "old_fingerprint": old.Fingerprint})
	})
	if err != nil {
		return fmt.Errorf("forget host key: %w", err)
	}
	return nil
}

// RepinHostKey replaces a pin that an admin cleared (ForgetHostKey left an
// empty key) with k; a pin that holds a key is left alone.
func (db *DB) RepinHostKey(ctx context.Context, k fieldpass.SSHHostKey, device string) (*fieldpass.SSHHostKey, error) {
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE ssh_host_keys SET key_type = $3, key = $4, fingerprint = $5, pinned_at = $6, pinned_by = $7
			WHERE device_id = $1::uuid AND service = $2 AND fingerprint = ''`,
			k.DeviceID, k.Service, k.Type, k.Key, k.Fingerprint, db.now(), k.PinnedBy)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		return db.audit(ctx, tx, k.PinnedBy, fieldpass.AuditHostKeyPin, "device:"+device,
			map[string]any{"service": k.Service, "fingerprint": k.Fingerprint, "type": k.Type, "after_accept": true})
	})
	if err != nil {
		return nil, fmt.Errorf("repin host key: %w", err)
	}
	return db.HostKey(ctx, k.DeviceID, k.Service)
}

// StartRecording creates the recording of a terminal session.
func (db *DB) StartRecording(ctx context.Context, sessionID, header string, input bool) error {
	if !uuidRE.MatchString(sessionID) {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid session id %q", sessionID)
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO recordings (session_id, header, started_at, input) VALUES ($1::uuid, $2, $3, $4)`,
		sessionID, header, db.now(), input)
	if err != nil {
		return fmt.Errorf("start recording: %w", err)
	}
	return nil
}

// AppendRecording appends the chunk numbered seq (from 0) of asciicast
// event lines to a session's recording.
func (db *DB) AppendRecording(ctx context.Context, sessionID string, seq int, events string) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO recording_chunks (session_id, seq, at, events) VALUES ($1::uuid, $2, $3, $4)`,
		sessionID, seq, db.now(), events)
	if err != nil {
		return fmt.Errorf("append recording: %w", err)
	}
	return nil
}

// Recording returns a session's terminal recording as an asciicast v2
// file, or ENOTFOUND when the session recorded none.
func (db *DB) Recording(ctx context.Context, sessionID string) (string, error) {
	if !uuidRE.MatchString(sessionID) {
		return "", fieldpass.Errorf(fieldpass.EINVALID, "invalid session id %q", sessionID)
	}
	var header string
	err := db.pool.QueryRow(ctx, `SELECT header FROM recordings WHERE session_id = $1::uuid`, sessionID).Scan(&header)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fieldpass.Errorf(fieldpass.ENOTFOUND, "session %s has no recording", sessionID)
	}
	if err != nil {
		return "", fmt.Errorf("read recording: %w", err)
	}
	rows, err := db.pool.Query(ctx, `SELECT events FROM recording_chunks WHERE session_id = $1::uuid ORDER BY seq`, sessionID)
	chunks, err := collectRows(rows, err, "read recording", func(row pgx.Row) (string, error) {
		var s string
		return s, row.Scan(&s)
	})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(header)
	b.WriteByte('\n')
	for _, c := range chunks {
		b.WriteString(c)
	}
	return b.String(), nil
}

// HasRecording reports whether a session recorded a terminal.
func (db *DB) HasRecording(ctx context.Context, sessionID string) (bool, error) {
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM recordings WHERE session_id = $1::uuid)`, sessionID).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up recording: %w", err)
	}
	return ok, nil
}

// ApplyRetention deletes terminal recordings and web request logs of
// sessions that started before before, and records in the audit log that
// it did: session rows and audit events stay.
func (db *DB) ApplyRetention(ctx context.Context, actor string, before time.Time) (recordings, webRequests int64, err error) {
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM recordings WHERE started_at < $1`, before)
		if err != nil {
			return err
		}
		recordings = tag.RowsAffected()
		tag, err = tx.Exec(ctx, `DELETE FROM web_requests WHERE at < $1`, before)
		if err != nil {
			return err
		}
		webRequests = tag.RowsAffected()
		if recordings == 0 && webRequests == 0 {
			return nil
		}
		return db.audit(ctx, tx, actor, fieldpass.AuditRetention, "retention",
			map[string]any{"before": before.UTC().Format(time.RFC3339), "recordings": recordings, "web_requests": webRequests})
	})
	if err != nil {
		return 0, 0, fmt.Errorf("apply retention: %w", err)
	}
	return recordings, webRequests, nil
}

// HostKeys lists the host keys pinned for a device's services.
func (db *DB) HostKeys(ctx context.Context, deviceID string) ([]fieldpass.SSHHostKey, error) {
	if !uuidRE.MatchString(deviceID) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", deviceID)
	}
	rows, err := db.pool.Query(ctx, `SELECT device_id::text, service, key_type, key, fingerprint, pinned_at, pinned_by
		FROM ssh_host_keys WHERE device_id = $1::uuid ORDER BY service`, deviceID)
	return collectRows(rows, err, "list host keys", func(row pgx.Row) (fieldpass.SSHHostKey, error) {
		var k fieldpass.SSHHostKey
		err := row.Scan(&k.DeviceID, &k.Service, &k.Type, &k.Key, &k.Fingerprint, &k.PinnedAt, &k.PinnedBy)
		k.PinnedAt = k.PinnedAt.UTC()
		return k, err
	})
}
