package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// GrantTarget is the audit target naming a grant.
func GrantTarget(id string) string { return "grant:" + id }

const grantColumns = `g.id::text, g.subject, g.devices, g.selector, g.services, g.starts_at, g.ends_at,
	g.reason, g.ticket, g.created_by, g.created_at, g.revoked_at, g.revoked_by, g.revoke_reason`

func scanGrant(row pgx.Row) (*fieldpass.Grant, error) {
	var (
		g         fieldpass.Grant
		revokedAt *time.Time
		revokedBy *string
	)
	err := row.Scan(&g.ID, &g.Subject, &g.Devices, &g.Selector, &g.Services, &g.Start, &g.End,
		&g.Reason, &g.Ticket, &g.CreatedBy, &g.CreatedAt, &revokedAt, &revokedBy, &g.RevokeReason)
	if err != nil {
		return nil, err
	}
	g.Start, g.End, g.CreatedAt = g.Start.UTC(), g.End.UTC(), g.CreatedAt.UTC()
	if revokedAt != nil {
		g.RevokedAt = revokedAt.UTC()
	}
	g.RevokedBy = deref(revokedBy)
	return &g, nil
}

// CreateGrant validates g (fieldpass.Grant.Validate) and stores it, recorded
// by actor as grant.create; CreatedBy is actor. A zero Start means now.
// Refused: a grant that has already ended, or that lasts longer than
// maxDuration (the limit for the subject's roles: fieldpass.GrantLimits).
// Running brokers hear of it on GrantsChannel.
func (db *DB) CreateGrant(ctx context.Context, actor string, g fieldpass.Grant, maxDuration time.Duration) (*fieldpass.Grant, error) {
	if err := checkActor(actor); err != nil {
		return nil, err
	}
	var out *fieldpass.Grant
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var err error
		out, err = db.createGrantTx(ctx, tx, actor, g, maxDuration, nil)
		return err
	})
	if err != nil {
		return nil, wrap(err, "create grant")
	}
	return out, nil
}

// createGrantTx is CreateGrant inside tx; extra goes into the audit details.
func (db *DB) createGrantTx(ctx context.Context, tx pgx.Tx, actor string, g fieldpass.Grant, maxDuration time.Duration, extra map[string]any) (*fieldpass.Grant, error) {
	now := db.now()
	if g.Start.IsZero() {
		g.Start = now
	}
	g.Start, g.End = g.Start.UTC().Truncate(time.Microsecond), g.End.UTC().Truncate(time.Microsecond)
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if maxDuration <= 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "no maximum grant duration given: every grant ends")
	}
	if d := g.End.Sub(g.Start); d > maxDuration {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "grant lasts %s, longer than the %s allowed for %s",
			fieldpass.FormatDuration(d), fieldpass.FormatDuration(maxDuration), g.Subject)
	}
	if !g.End.After(now) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "grant would end at %s, which has passed", g.End.Format(time.RFC3339))
	}
	// Untyped nils, so the column not used is SQL NULL (not JSON null).
	var devices, selector any
	if len(g.Devices) > 0 {
		devices = g.Devices
	} else {
		selector = g.Selector
	}
	out, err := scanGrant(tx.QueryRow(ctx, `
		INSERT INTO grants AS g (subject, devices, selector, services, starts_at, ends_at, reason, ticket, created_by, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		RETURNING `+grantColumns,
		g.Subject, devices, selector, g.Services, g.Start, g.End, g.Reason, g.Ticket, actor, now))
	if err != nil {
		return nil, fmt.Errorf("insert grant: %w", err)
	}
	details := map[string]any{
		"subject":  out.Subject,
		"services": out.Services,
		"start":    out.Start.Format(time.RFC3339Nano),
		"end":      out.End.Format(time.RFC3339Nano),
		"reason":   out.Reason,
	}
	if len(out.Devices) > 0 {
		details["devices"] = out.Devices
	} else {
		details["selector"] = out.Selector
	}
	if out.Ticket != "" {
		details["ticket"] = out.Ticket
	}
	for k, v := range extra {
		details[k] = v
	}
	if err := db.audit(ctx, tx, actor, fieldpass.AuditGrantCreate, GrantTarget(out.ID), details); err != nil {
		return nil, err
	}
	return out, nil
}

// Grant returns the grant with id.
func (db *DB) Grant(ctx context.Context, id string) (*fieldpass.Grant, error) {
	if !uuidRE.MatchString(id) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid grant id %q", id)
	}
	g, err := scanGrant(db.pool.QueryRow(ctx, `SELECT `+grantColumns+` FROM grants g WHERE g.id = $1::uuid`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "grant %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get grant %s: %w", id, err)
	}
	return g, nil
}

const maxGrantPage = 1000

// Grants returns the grants f selects, newest first.
func (db *DB) Grants(ctx context.Context, f fieldpass.GrantFilter) ([]*fieldpass.Grant, error) {
	limit, err := pageLimit(f.Limit, maxGrantPage)
	if err != nil {
		return nil, err
	}
	var w filter
	if f.Subject != "" {
		email, err := fieldpass.NormalizeEmail(f.Subject)
		if err != nil {
			return nil, err
		}
		w.add("g.subject = $?", email)
	}
	if f.Device != "" {
		if err := fieldpass.ValidateDeviceName(f.Device); err != nil {
			return nil, err
		}
		w.add(`(g.devices @> ARRAY[$?::text] OR EXISTS (
			SELECT 1 FROM devices d WHERE d.name = $? AND d.state <> 'decommissioned' AND d.labels @> g.selector))`, f.Device)
	}
	if !f.ActiveAt.IsZero() {
		w.add("g.starts_at <= $? AND g.ends_at > $? AND (g.revoked_at IS NULL OR g.revoked_at > $?)", f.ActiveAt)
	}
	q := `SELECT ` + grantColumns + ` FROM grants g WHERE ` + w.where() + ` ORDER BY g.created_at DESC, g.id` + w.limit(limit)
	return db.queryGrants(ctx, q, w.args...)
}

func (db *DB) queryGrants(ctx context.Context, q string, args ...any) ([]*fieldpass.Grant, error) {
	rows, err := db.pool.Query(ctx, q, args...)
	return collectRows(rows, err, "list grants", scanGrant)
}

// RevokeGrant revokes the grant with id now, recorded by actor as
// grant.revoke; RevokedBy is actor. Running brokers hear of it on
// GrantsChannel and cut its sessions. Refused with conflict: a grant
// already revoked, or already ended.
func (db *DB) RevokeGrant(ctx context.Context, actor, id string) (*fieldpass.Grant, error) {
	return db.RevokeGrantBecause(ctx, actor, id, "")
}

// RevokeGrantBecause is RevokeGrant with why (optional, one line): kept
// on the grant (RevokeReason) and in the audit event's reason.
func (db *DB) RevokeGrantBecause(ctx context.Context, actor, id, reason string) (*fieldpass.Grant, error) {
	if err := checkActor(actor); err != nil {
		return nil, err
	}
	if err := fieldpass.ValidateOptionalReason(reason); err != nil {
		return nil, err
	}
	if !uuidRE.MatchString(id) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid grant id %q", id)
	}
	var g *fieldpass.Grant
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		cur, err := scanGrant(tx.QueryRow(ctx, `SELECT `+grantColumns+` FROM grants g WHERE g.id = $1::uuid FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fieldpass.Errorf(fieldpass.ENOTFOUND, "grant %s not found", id)
		}
		if err != nil {
			return fmt.Errorf("get grant: %w", err)
		}
		now := db.now()
		switch {
		case cur.Revoked():
			return fieldpass.Errorf(fieldpass.ECONFLICT, "grant %s was already revoked at %s by %s", id, cur.RevokedAt.Format(time.RFC3339), cur.RevokedBy)
		case !now.Before(cur.End):
			return fieldpass.Errorf(fieldpass.ECONFLICT, "grant %s already ended at %s", id, cur.End.Format(time.RFC3339))
		}
		g, err = scanGrant(tx.QueryRow(ctx, `UPDATE grants g SET revoked_at = $2, revoked_by = $3, revoke_reason = $4 WHERE id = $1::uuid RETURNING `+grantColumns,
			id, now, actor, reason))
		if err != nil {
			return fmt.Errorf("revoke grant: %w", err)
		}
		details := map[string]any{"subject": g.Subject}
		if reason != "" {
			details["reason"] = reason
		}
		return db.audit(ctx, tx, actor, fieldpass.AuditGrantRevoke, GrantTarget(id), details)
	})
	if err != nil {
		return nil, wrap(err, "revoke grant "+id)
	}
	return g, nil
}

// ActiveGrantFor returns a grant that lets email reach service on the live
// device named device at time at: made out to email, naming the device or
// selecting it by its labels, in force at at. Of several, the one that
// ends last. Refused, so that no stream opens (each refusal carries its
// fieldpass.DenyReason):
//
//	not_found  no live device by that name (device_unknown)
//	forbidden  the device is disabled (device_disabled); the user is
//	           disabled (user_disabled); no grant covers it (no_grant)
func (db *DB) ActiveGrantFor(ctx context.Context, email, device, service string, at time.Time) (*fieldpass.Grant, error) {
	// Bad input is refused before the device is looked up, as ever.
	if _, err := fieldpass.NormalizeEmail(email); err != nil {
		return nil, err
	}
	if err := fieldpass.ValidateServiceName(service); err != nil {
		return nil, err
	}
	dev, err := db.Device(ctx, device)
	if err != nil {
		if fieldpass.ErrorCode(err) == fieldpass.ENOTFOUND {
			return nil, fieldpass.Deny(fieldpass.DenyDeviceUnknown, err)
		}
		return nil, err
	}
	return db.ActiveGrantOn(ctx, email, dev, service, at)
}

// ActiveGrantOn is ActiveGrantFor for a device the caller has read already
// (the session manager reads it once for every rule of a connect). dev's
// state is taken as read; the user and the grants are read here.
func (db *DB) ActiveGrantOn(ctx context.Context, email string, dev *fieldpass.Device, service string, at time.Time) (*fieldpass.Grant, error) {
	email, err := fieldpass.NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	if err := fieldpass.ValidateServiceName(service); err != nil {
		return nil, err
	}
	if dev.State != fieldpass.DeviceActive {
		return nil, fieldpass.Deny(fieldpass.DenyDeviceDisabled, fieldpass.Errorf(fieldpass.EFORBIDDEN, "device %s is %s", dev.Name, dev.State))
	}
	var disabled bool
	err = db.pool.QueryRow(ctx, `SELECT disabled FROM users WHERE email = $1`, email).Scan(&disabled)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("get user %s: %w", email, err)
	}
	if disabled {
		return nil, fieldpass.Deny(fieldpass.DenyUserDisabled, fieldpass.Errorf(fieldpass.EFORBIDDEN, "user %s is disabled", email))
	}
	gs, err := db.queryGrants(ctx, `
		SELECT `+grantColumns+` FROM grants g
		WHERE g.subject = $1 AND $2 = ANY (g.services)
		  AND g.starts_at <= $3 AND g.ends_at > $3 AND (g.revoked_at IS NULL OR g.revoked_at > $3)
		ORDER BY g.ends_at DESC, g.id`, email, service, at.UTC())
	if err != nil {
		return nil, err
	}
	// The final word is Covers, the same rule the broker applies to live
	// sessions; the query only narrows the candidates.
	for _, g := range gs {
		if g.Covers(dev, service, at) {
			return g, nil
		}
	}
	return nil, fieldpass.Deny(fieldpass.DenyNoGrant, fieldpass.Errorf(fieldpass.EFORBIDDEN, "no active grant gives %s access to %s on %s", email, service, dev.Name))
}

// UnknownDevices returns those of names that name no device, or only a
// decommissioned one, in the order given: a grant naming them would let
// no one in until such a device is enrolled.
func (db *DB) UnknownDevices(ctx context.Context, names []string) ([]string, error) {
	rows, err := db.pool.Query(ctx, `
		SELECT n FROM unnest($1::text[]) WITH ORDINALITY AS x(n, i)
		WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.name = x.n AND d.state <> 'decommissioned')
		ORDER BY i`, names)
	if err != nil {
		return nil, wrap(err, "look up devices")
	}
	unknown, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, wrap(err, "look up devices")
	}
	return unknown, nil
}
