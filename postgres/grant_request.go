package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// RequestTarget is the audit target naming an access request.
func RequestTarget(id string) string { return "request:" + id }

const requestColumns = `id::text, requester, device, service, duration_seconds, reason, ticket,
	created_at, status, decided_by, decided_at, grant_id::text, decision_comment`

func scanRequest(row pgx.Row) (*fieldpass.AccessRequest, error) {
	var (
		r                  fieldpass.AccessRequest
		seconds            int64
		status             string
		decidedBy, grantID *string
		decidedAt          *time.Time
	)
	err := row.Scan(&r.ID, &r.Requester, &r.Device, &r.Service, &seconds, &r.Reason, &r.Ticket,
		&r.CreatedAt, &status, &decidedBy, &decidedAt, &grantID, &r.Comment)
	if err != nil {
		return nil, err
	}
	r.Duration = time.Duration(seconds) * time.Second
	r.CreatedAt = r.CreatedAt.UTC()
	r.Status = fieldpass.RequestStatus(status)
	r.DecidedBy, r.GrantID = deref(decidedBy), deref(grantID)
	if decidedAt != nil {
		r.DecidedAt = decidedAt.UTC()
	}
	return &r, nil
}

// CreateRequest stores a pending access request, recorded as request.create
// by the requester. The duration is kept in whole seconds. Refused:
// not_found for a device with no live device by that name, conflict for a
// second pending request for the same device and service.
func (db *DB) CreateRequest(ctx context.Context, r fieldpass.AccessRequest) (*fieldpass.AccessRequest, error) {
	return db.createRequest(ctx, r, false)
}

// CreateRequestAnyDevice is CreateRequest that files a request for a device
// name no live device has too: for requesters who may not learn whether
// it exists (access.Service.CreateRequest).
func (db *DB) CreateRequestAnyDevice(ctx context.Context, r fieldpass.AccessRequest) (*fieldpass.AccessRequest, error) {
	return db.createRequest(ctx, r, true)
}

func (db *DB) createRequest(ctx context.Context, r fieldpass.AccessRequest, anyDevice bool) (*fieldpass.AccessRequest, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	r.Duration = r.Duration.Truncate(time.Second)
	var out *fieldpass.AccessRequest
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var live bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM devices WHERE name = $1 AND state <> 'decommissioned')`, r.Device).Scan(&live); err != nil {
			return fmt.Errorf("get device: %w", err)
		}
		if !live && !anyDevice {
			return fieldpass.Errorf(fieldpass.ENOTFOUND, "device %q not found", r.Device)
		}
		var err error
		out, err = scanRequest(tx.QueryRow(ctx, `
			INSERT INTO access_requests (requester, device, service, duration_seconds, reason, ticket, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			RETURNING `+requestColumns,
			r.Requester, r.Device, r.Service, int64(r.Duration/time.Second), r.Reason, r.Ticket, db.now()))
		if uniqueViolation(err) == "access_requests_one_pending" {
			return fieldpass.Errorf(fieldpass.ECONFLICT, "you already have a pending request for %s on %s", r.Service, r.Device)
		}
		if err != nil {
			return fmt.Errorf("insert request: %w", err)
		}
		details := map[string]any{
			"device": out.Device, "service": out.Service, "duration": out.Duration.String(), "reason": out.Reason,
		}
		if out.Ticket != "" {
			details["ticket"] = out.Ticket
		}
		return db.audit(ctx, tx, fieldpass.UserActor(out.Requester), fieldpass.AuditRequestCreate, RequestTarget(out.ID), details)
	})
	if err != nil {
		return nil, wrap(err, "create request")
	}
	return out, nil
}

// Request returns the access request with id.
func (db *DB) Request(ctx context.Context, id string) (*fieldpass.AccessRequest, error) {
	if !uuidRE.MatchString(id) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid request id %q", id)
	}
	r, err := scanRequest(db.pool.QueryRow(ctx, `SELECT `+requestColumns+` FROM access_requests WHERE id = $1::uuid`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "request %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get request %s: %w", id, err)
	}
	return r, nil
}

// Requests returns the access requests f selects, newest first.
func (db *DB) Requests(ctx context.Context, f fieldpass.RequestFilter) ([]*fieldpass.AccessRequest, error) {
	limit, err := pageLimit(f.Limit, maxGrantPage)
	if err != nil {
		return nil, err
	}
	var w filter
	if f.Requester != "" {
		email, err := fieldpass.NormalizeEmail(f.Requester)
		if err != nil {
			return nil, err
		}
		w.add("requester = $?", email)
	}
	switch f.Status {
	case "":
	case fieldpass.RequestPending, fieldpass.RequestApproved, fieldpass.RequestDenied:
		w.add("status = $?", string(f.Status))
	default:
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid request status %q: want pending, approved or denied", f.Status)
	}
	q := `SELECT ` + requestColumns + ` FROM access_requests WHERE ` + w.where() + ` ORDER BY created_at DESC, id` + w.limit(limit)
	rows, err := db.pool.Query(ctx, q, w.args...)
	return collectRows(rows, err, "list requests", scanRequest)
}

// DecideRequest approves or denies the pending request id for approver (an
// email; the actor recorded is fieldpass.UserActor(approver)). Approval
// creates the grant in the same transaction: made out to the requester, for
// the device by name and the one service, from now for the requested
// duration, which must not exceed maxDuration (the limit for the requester's
// roles). It returns the decided request and, when approved, the grant.
//
// The request's row is locked for the decision, so of concurrent decisions
// exactly one wins and the others get conflict. Refused: forbidden for the
// requester deciding their own request; conflict for a decided request.
// Checking that approver holds the approver or admin role is the caller's.
func (db *DB) DecideRequest(ctx context.Context, approver, id string, approve bool, maxDuration time.Duration, comment string) (*fieldpass.AccessRequest, *fieldpass.Grant, error) {
	if len(comment) > 1000 {
		return nil, nil, fieldpass.Errorf(fieldpass.EINVALID, "comment longer than 1000 bytes")
	}
	approver, err := fieldpass.NormalizeEmail(approver)
	if err != nil {
		return nil, nil, err
	}
	if !uuidRE.MatchString(id) {
		return nil, nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid request id %q", id)
	}
	actor := fieldpass.UserActor(approver)
	var (
		req   *fieldpass.AccessRequest
		grant *fieldpass.Grant
	)
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		cur, err := scanRequest(tx.QueryRow(ctx, `SELECT `+requestColumns+` FROM access_requests WHERE id = $1::uuid FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fieldpass.Errorf(fieldpass.ENOTFOUND, "request %s not found", id)
		}
		if err != nil {
			return fmt.Errorf("get request: %w", err)
		}
		if cur.Requester == approver {
			return fieldpass.Errorf(fieldpass.EFORBIDDEN, "you cannot decide your own request: ask another approver")
		}
		if cur.Status != fieldpass.RequestPending {
			return fieldpass.Errorf(fieldpass.ECONFLICT, "request %s was already %s by %s at %s",
				id, cur.Status, cur.DecidedBy, cur.DecidedAt.Format(time.RFC3339))
		}
		now := db.now()
		status, action := fieldpass.RequestDenied, fieldpass.AuditRequestDeny
		var grantID *string
		if approve {
			status, action = fieldpass.RequestApproved, fieldpass.AuditRequestApprove
			if cur.Duration > maxDuration {
				return fieldpass.Errorf(fieldpass.EINVALID, "request asks for %s, longer than the %s allowed for %s: deny it and ask for a shorter one",
					fieldpass.FormatDuration(cur.Duration), fieldpass.FormatDuration(maxDuration), cur.Requester)
			}
			grant, err = db.createGrantTx(ctx, tx, actor, fieldpass.Grant{
				Subject:  cur.Requester,
				Devices:  []string{cur.Device},
				Services: []string{cur.Service},
				Start:    now,
				End:      now.Add(cur.Duration),
				Reason:   cur.Reason,
				Ticket:   cur.Ticket,
			}, maxDuration, map[string]any{"request_id": id})
			if err != nil {
				return err
			}
			grantID = &grant.ID
		}
		req, err = scanRequest(tx.QueryRow(ctx, `
			UPDATE access_requests SET status = $2, decided_by = $3, decided_at = $4, grant_id = $5::uuid, decision_comment = $6
			WHERE id = $1::uuid RETURNING `+requestColumns,
			id, string(status), approver, now, grantID, comment))
		if err != nil {
			return fmt.Errorf("decide request: %w", err)
		}
		details := map[string]any{"requester": cur.Requester, "device": cur.Device, "service": cur.Service}
		if comment != "" {
			details["comment"] = comment
		}
		if grant != nil {
			details["grant_id"] = grant.ID
		}
		return db.audit(ctx, tx, actor, action, RequestTarget(id), details)
	})
	if err != nil {
		return nil, nil, wrap(err, "decide request "+id)
	}
	return req, grant, nil
}
