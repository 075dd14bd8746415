package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// RecordDeviceEvent appends one row to a device's connectivity history. A
// zero At means now. The broker calls it off its hot path (broker/history.go).
func (db *DB) RecordDeviceEvent(ctx context.Context, e fieldpass.DeviceEvent) error {
	if !uuidRE.MatchString(e.DeviceID) {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", e.DeviceID)
	}
	switch e.Kind {
	case fieldpass.DeviceOnline, fieldpass.DeviceOffline, fieldpass.DeviceEndpointChanged,
		fieldpass.DeviceVersionChanged, fieldpass.DeviceCloneSuspected, fieldpass.DeviceHandshakeReset:
	default:
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid device event kind %q", e.Kind)
	}
	for _, f := range []struct {
		what, s string
		max     int
	}{
		{"endpoint", e.Endpoint, maxEndpointLen},
		{"previous endpoint", e.PreviousEndpoint, maxEndpointLen},
		{"connector version", e.ConnectorVersion, maxVersionLen},
		{"broker id", e.BrokerID, maxBrokerIDLen},
	} {
		if err := validateText(f.what, f.s, f.max); err != nil {
			return err
		}
	}
	if e.At.IsZero() {
		e.At = db.now()
	}
	details := e.Details
	if details == nil {
		details = map[string]any{}
	}
	_, err := db.pool.Exec(ctx, `
		INSERT INTO device_events (device_id, at, kind, broker_id, endpoint, previous_endpoint, connector_version, details)
		VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8)`,
		e.DeviceID, e.At, string(e.Kind), e.BrokerID, e.Endpoint, e.PreviousEndpoint, e.ConnectorVersion, details)
	if err != nil {
		return fmt.Errorf("record %s of device %s: %w", e.Kind, e.DeviceID, err)
	}
	return nil
}

// DeviceHistory returns the connectivity history of the live device named
// name since since (zero: all of it), newest first, at most limit rows
// (0: fieldpass.DefaultDeviceHistoryLimit).
func (db *DB) DeviceHistory(ctx context.Context, name string, since time.Time, limit int) ([]*fieldpass.DeviceEvent, error) {
	if limit < 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid limit %d", limit)
	}
	if limit == 0 {
		limit = fieldpass.DefaultDeviceHistoryLimit
	}
	dev, err := db.Device(ctx, name)
	if err != nil {
		return nil, err
	}
	rows, err := db.pool.Query(ctx, `
		SELECT id, device_id::text, at, kind, broker_id, endpoint, previous_endpoint, connector_version, details
		FROM device_events
		WHERE device_id = $1::uuid AND at >= $2
		ORDER BY at DESC, id DESC
		LIMIT $3`, dev.ID, since, limit)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", name, err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*fieldpass.DeviceEvent, error) {
		var e fieldpass.DeviceEvent
		var kind string
		if err := row.Scan(&e.ID, &e.DeviceID, &e.At, &kind, &e.BrokerID, &e.Endpoint,
			&e.PreviousEndpoint, &e.ConnectorVersion, &e.Details); err != nil {
			return nil, err
		}
		e.Kind = fieldpass.DeviceEventKind(kind)
		e.At = e.At.UTC()
		if len(e.Details) == 0 {
			e.Details = nil
		}
		return &e, nil
	})
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", name, err)
	}
	return evs, nil
}

// StaleReport finds devices not seen for opts.NotSeen, devices with no
// session for opts.NoSession, grants no session ever used, and vendor
// accounts (enabled users with no role) holding no live grant.
func (db *DB) StaleReport(ctx context.Context, opts fieldpass.StaleOptions) (*fieldpass.StaleReport, error) {
	if opts.NotSeen < 0 || opts.NoSession < 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "negative stale threshold")
	}
	if opts.NotSeen == 0 {
		opts.NotSeen = 30 * 24 * time.Hour
	}
	if opts.NoSession == 0 {
		opts.NoSession = 90 * 24 * time.Hour
	}
	now := db.now()
	rep := &fieldpass.StaleReport{
		At: now.UTC(),
		Options: fieldpass.StaleOptionsOut{
			NotSeenSeconds:   int64(opts.NotSeen / time.Second),
			NoSessionSeconds: int64(opts.NoSession / time.Second),
		},
		NotSeen: []fieldpass.StaleItem{}, NoSession: []fieldpass.StaleItem{}, UnusedGrants: []fieldpass.StaleItem{}, IdleVendors: []fieldpass.StaleItem{},
	}
	collect := func(what string, dst *[]fieldpass.StaleItem, query string, scan func(pgx.Row) (fieldpass.StaleItem, error), args ...any) error {
		rows, err := db.pool.Query(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("stale report: %s: %w", what, err)
		}
		items, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (fieldpass.StaleItem, error) { return scan(row) })
		if err != nil {
			return fmt.Errorf("stale report: %s: %w", what, err)
		}
		*dst = append(*dst, items...)
		return nil
	}
	deviceCommand := func(name, state string, decommission bool) string {
		if state == string(fieldpass.DeviceActive) && !decommission {
			return "fieldpass-broker device disable " + name
		}
		return "fieldpass-broker device decommission " + name
	}
	// A device never seen counts from its enrolment.
	err := collect("devices not seen", &rep.NotSeen, `
		SELECT name, state, coalesce(last_seen, enrolled_at), last_seen IS NULL
		FROM devices
		WHERE state <> 'decommissioned' AND NOT online
		  AND coalesce(last_seen, enrolled_at) < $1
		ORDER BY coalesce(last_seen, enrolled_at), name`,
		func(row pgx.Row) (fieldpass.StaleItem, error) {
			var it fieldpass.StaleItem
			var state string
			var never bool
			if err := row.Scan(&it.Target, &state, &it.Since, &never); err != nil {
				return it, err
			}
			it.Since = it.Since.UTC()
			it.Detail = fmt.Sprintf("%s; last seen %s", state, it.Since.Format(time.RFC3339))
			if never {
				it.Detail = fmt.Sprintf("%s; never seen since enrolment on %s", state, it.Since.Format(time.RFC3339))
			}
			it.Command = deviceCommand(it.Target, state, false)
			return it, nil
		}, now.Add(-opts.NotSeen))
	if err != nil {
		return nil, err
	}
	err = collect("devices without sessions", &rep.NoSession, `
		SELECT d.name, d.state, d.enrolled_at, s.last
		FROM devices d
		LEFT JOIN LATERAL (SELECT max(started_at) AS last FROM sessions WHERE device_id = d.id) s ON true
		WHERE d.state <> 'decommissioned' AND d.enrolled_at < $1
		  AND (s.last IS NULL OR s.last < $1)
		ORDER BY coalesce(s.last, d.enrolled_at), d.name`,
		func(row pgx.Row) (fieldpass.StaleItem, error) {
			var it fieldpass.StaleItem
			var state string
			var enrolled time.Time
			var last *time.Time
			if err := row.Scan(&it.Target, &state, &enrolled, &last); err != nil {
				return it, err
			}
			if last == nil {
				it.Since = enrolled.UTC()
				it.Detail = fmt.Sprintf("%s; no session since enrolment on %s", state, it.Since.Format(time.RFC3339))
			} else {
				it.Since = last.UTC()
				it.Detail = fmt.Sprintf("%s; last session %s", state, it.Since.Format(time.RFC3339))
			}
			it.Command = deviceCommand(it.Target, state, true)
			return it, nil
		}, now.Add(-opts.NoSession))
	if err != nil {
		return nil, err
	}
	err = collect("unused grants", &rep.UnusedGrants, `
		SELECT g.id::text, g.subject, g.created_at, g.ends_at, g.revoked_at IS NOT NULL
		FROM grants g
		WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.grant_id = g.id)
		ORDER BY g.created_at, g.id`,
		func(row pgx.Row) (fieldpass.StaleItem, error) {
			var it fieldpass.StaleItem
			var subject string
			var ends time.Time
			var revoked bool
			if err := row.Scan(&it.Target, &subject, &it.Since, &ends, &revoked); err != nil {
				return it, err
			}
			it.Since = it.Since.UTC()
			switch {
			case revoked:
				it.Detail = fmt.Sprintf("for %s; revoked unused", subject)
			case !ends.After(now):
				it.Detail = fmt.Sprintf("for %s; ended unused on %s", subject, ends.UTC().Format(time.RFC3339))
			default:
				it.Detail = fmt.Sprintf("for %s; unused, ends %s", subject, ends.UTC().Format(time.RFC3339))
				it.Command = "fieldpass grant revoke " + it.Target
			}
			return it, nil
		})
	if err != nil {
		return nil, err
	}
	err = collect("idle vendors", &rep.IdleVendors, `
		SELECT u.email, u.created_at,
		       (SELECT max(coalesce(least(g.revoked_at, g.ends_at), g.ends_at)) FROM grants g WHERE g.subject = u.email)
		FROM users u
		WHERE cardinality(u.roles) = 0 AND NOT u.disabled
		  AND NOT EXISTS (SELECT 1 FROM grants g
		                  WHERE g.subject = u.email AND g.revoked_at IS NULL AND g.ends_at > $1)
		ORDER BY u.email`,
		func(row pgx.Row) (fieldpass.StaleItem, error) {
			var it fieldpass.StaleItem
			var created time.Time
			var lastGrant *time.Time
			if err := row.Scan(&it.Target, &created, &lastGrant); err != nil {
				return it, err
			}
			if lastGrant == nil {
				it.Since = created.UTC()
				it.Detail = "vendor; never held a grant"
			} else {
				it.Since = lastGrant.UTC()
				it.Detail = "vendor; last grant ended " + it.Since.Format(time.RFC3339)
			}
			it.Command = "fieldpass-broker user disable " + it.Target
			return it, nil
		}, now)
	if err != nil {
		return nil, err
	}
	return rep, nil
}
