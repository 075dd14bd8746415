package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// People are identified by their identity provider's (issuer, subject)
// (migrations/00012_user_identity.sql). Emails name grants, so an email
// alone must not decide who a login is: a provider may reassign an address.

// LoginIdentity is what a login at the identity provider proved.
type LoginIdentity struct {
	Issuer, Subject string
	Email           string // verified by the provider (identity.Provider checks)
	Roles           []fieldpass.Role
}

// LoginUser finds or creates the user a login proved, by (issuer, subject),
// and brings its roles up to date, noting when they were read
// (roles_checked_at). A user with that email and no binding yet (made by an
// operator, or by a login before bindings) is bound to this login at its
// first login. A login with another subject arriving with a bound user's
// email is refused: it is recorded as a claim (user.identity_claim, once)
// and gets nothing of that user until an administrator confirms it
// (ConfirmIdentity); its next login then moves the binding. Refusals are
// forbidden, with a message for the person. Recorded by actor.
func (db *DB) LoginUser(ctx context.Context, actor string, id LoginIdentity) (*fieldpass.User, error) {
	if err := checkActor(actor); err != nil {
		return nil, err
	}
	email, err := fieldpass.NormalizeEmail(id.Email)
	if err != nil {
		return nil, err
	}
	roles, err := fieldpass.NormalizeRoles(id.Roles)
	if err != nil {
		return nil, err
	}
	if id.Issuer == "" || id.Subject == "" {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "a login needs an issuer and a subject")
	}
	now := db.now()
	var u *fieldpass.User
	var refused error // committed with the claim, returned after
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		cur, err := scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users
			WHERE oidc_issuer = $1 AND oidc_subject = $2 FOR UPDATE`, id.Issuer, id.Subject))
		switch {
		case err == nil && cur.Email != email:
			refused = fieldpass.Errorf(fieldpass.EFORBIDDEN,
				"your email at the identity provider changed from %s to %s: an administrator must move your access", cur.Email, email)
			return nil
		case err == nil:
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("get user by subject: %w", err)
		default:
			cur, err = db.bindLogin(ctx, tx, actor, id, email, roles, &refused)
			if err != nil || refused != nil {
				return err
			}
		}
		if !slices.Equal(cur.Roles, roles) {
			if err := db.audit(ctx, tx, actor, fieldpass.AuditUserRoles, fieldpass.UserTarget(email), map[string]any{
				"user_id": cur.ID, "from": roleStrings(cur.Roles), "to": roleStrings(roles),
			}); err != nil {
				return err
			}
		}
		u, err = scanUser(tx.QueryRow(ctx, `UPDATE users SET roles = $2, roles_checked_at = $3,
			updated_at = CASE WHEN roles = $2 THEN updated_at ELSE $3 END
			WHERE id = $1 RETURNING `+userColumns, cur.ID, roleStrings(roles), now))
		if err != nil {
			return fmt.Errorf("update roles: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err, "log in "+email)
	}
	if refused != nil {
		return nil, refused
	}
	return u, nil
}

// bindLogin returns the user of email for a login whose (issuer, subject)
// no user has: created, bound if unbound, moved if an administrator
// confirmed the claim; otherwise it records the claim and sets *refused.
func (db *DB) bindLogin(ctx context.Context, tx pgx.Tx, actor string, id LoginIdentity, email string, roles []fieldpass.Role, refused *error) (*fieldpass.User, error) {
	now := db.now()
	var issuer, subject *string
	var userID string
	err := tx.QueryRow(ctx, `SELECT id::text, oidc_issuer, oidc_subject FROM users WHERE email = $1 FOR UPDATE`, email).Scan(&userID, &issuer, &subject)
	if errors.Is(err, pgx.ErrNoRows) {
		u, err := scanUser(tx.QueryRow(ctx, `
			INSERT INTO users (email, roles, created_at, updated_at, oidc_issuer, oidc_subject)
			VALUES ($1, $2, $3, $3, $4, $5) RETURNING `+userColumns, email, roleStrings(roles), now, id.Issuer, id.Subject))
		if err != nil {
			return nil, fmt.Errorf("insert user: %w", err)
		}
		// The user is created with its roles: no user.roles follows.
		u.Roles = roles
		return u, db.audit(ctx, tx, actor, fieldpass.AuditUserCreate, fieldpass.UserTarget(email), map[string]any{
			"user_id": u.ID, "roles": roleStrings(roles), "issuer": id.Issuer, "subject": id.Subject,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("get user: %w", err)
	}
	details := map[string]any{"user_id": userID, "issuer": id.Issuer, "subject": id.Subject}
	if issuer != nil {
		var seen, confirmed bool
		err := tx.QueryRow(ctx, `SELECT true, email = $3 AND confirmed_at IS NOT NULL FROM identity_claims
			WHERE oidc_issuer = $1 AND oidc_subject = $2 FOR UPDATE`, id.Issuer, id.Subject, email).Scan(&seen, &confirmed)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("get identity claim: %w", err)
		}
		if !confirmed {
			*refused = fieldpass.Errorf(fieldpass.EFORBIDDEN,
				"the email %s belongs to another login at the identity provider: an administrator must confirm that it is yours before you get its access", email)
			// A claim for another email than the one confirmed starts over.
			if _, err := tx.Exec(ctx, `INSERT INTO identity_claims (oidc_issuer, oidc_subject, email, first_seen, last_seen)
				VALUES ($1, $2, $3, $4, $4) ON CONFLICT (oidc_issuer, oidc_subject) DO UPDATE SET last_seen = $4,
				email = $3, confirmed_at = NULL, confirmed_by = NULL`,
				id.Issuer, id.Subject, email, now); err != nil {
				return nil, fmt.Errorf("record identity claim: %w", err)
			}
			if seen {
				return nil, nil // recorded once
			}
			details["bound_issuer"], details["bound_subject"] = *issuer, *subject
			return nil, db.audit(ctx, tx, actor, fieldpass.AuditUserIdentityClaim, fieldpass.UserTarget(email), details)
		}
		details["from_issuer"], details["from_subject"] = *issuer, *subject
	}
	u, err := scanUser(tx.QueryRow(ctx, `UPDATE users SET oidc_issuer = $2, oidc_subject = $3 WHERE id = $1 RETURNING `+userColumns,
		userID, id.Issuer, id.Subject))
	if err != nil {
		return nil, fmt.Errorf("bind user: %w", err)
	}
	return u, db.audit(ctx, tx, actor, fieldpass.AuditUserIdentityBind, fieldpass.UserTarget(email), details)
}

// IdentityClaim is a login waiting for an administrator's confirmation that
// it owns an email another login is bound to.
type IdentityClaim struct {
	Issuer, Subject, Email string
	FirstSeen, LastSeen    time.Time
	ConfirmedBy            string // "" while waiting
}

// ConfirmIdentity records, by actor (an administrator), that the login
// (issuer, subject) owns the email it claimed: its next login takes over
// that email's user and grants. Recorded as user.identity_confirm.
func (db *DB) ConfirmIdentity(ctx context.Context, actor, issuer, subject string) (*IdentityClaim, error) {
	if err := checkActor(actor); err != nil {
		return nil, err
	}
	var c IdentityClaim
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE identity_claims SET confirmed_at = $3, confirmed_by = $4
			WHERE oidc_issuer = $1 AND oidc_subject = $2 AND confirmed_at IS NULL
			RETURNING oidc_issuer, oidc_subject, email, first_seen, last_seen, confirmed_by`,
			issuer, subject, db.now(), actor).Scan(&c.Issuer, &c.Subject, &c.Email, &c.FirstSeen, &c.LastSeen, &c.ConfirmedBy)
		if errors.Is(err, pgx.ErrNoRows) {
			return fieldpass.Errorf(fieldpass.ENOTFOUND, "no unconfirmed claim by %s at %s", subject, issuer)
		}
		if err != nil {
			return fmt.Errorf("confirm identity claim: %w", err)
		}
		return db.audit(ctx, tx, actor, fieldpass.AuditUserIdentityConfirm, fieldpass.UserTarget(c.Email), map[string]any{
			"issuer": issuer, "subject": subject,
		})
	})
	if err != nil {
		return nil, wrap(err, "confirm identity")
	}
	return &c, nil
}
