package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// Users and their broker-issued tokens (migrations/00003_access.sql). Every
// change is recorded in the audit log in its own transaction, by the actor
// the caller names.

// MaxTokenTTL bounds how long any broker-issued token stays valid.
const MaxTokenTTL = 90 * 24 * time.Hour

// tokenTouchInterval is how stale last_used_at may get: Authenticate writes
// it at most this often per token, not on every request.
const tokenTouchInterval = time.Minute

const userColumns = `id::text, email, roles, disabled, created_at, roles_checked_at`

func scanUser(row pgx.Row) (*fieldpass.User, error) {
	var u fieldpass.User
	var roles []string
	var checked *time.Time
	if err := row.Scan(&u.ID, &u.Email, &roles, &u.Disabled, &u.CreatedAt, &checked); err != nil {
		return nil, err
	}
	if checked != nil {
		u.RolesCheckedAt = checked.UTC()
	}
	for _, r := range roles {
		u.Roles = append(u.Roles, fieldpass.Role(r))
	}
	slices.Sort(u.Roles)
	u.CreatedAt = u.CreatedAt.UTC()
	return &u, nil
}

func roleStrings(roles []fieldpass.Role) []string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = string(r)
	}
	return out
}

// EnsureUser creates the user email with roles, or brings an existing
// user's roles up to date: the identity provider is the source of roles,
// and this runs at every login. It records user.create or user.roles by
// actor when something changed, and nothing otherwise. A disabled user stays
// disabled (the caller refuses the login).
func (db *DB) EnsureUser(ctx context.Context, actor, email string, roles []fieldpass.Role) (*fieldpass.User, error) {
	if err := checkActor(actor); err != nil {
		return nil, err
	}
	email, err := fieldpass.NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	roles, err = fieldpass.NormalizeRoles(roles)
	if err != nil {
		return nil, err
	}
	now := db.now()
	var u *fieldpass.User
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		// The insert takes the unique index's lock, so concurrent logins of a
		// new user create it once; ON CONFLICT leaves the row alone and the
		// SELECT FOR UPDATE below serialises the role update.
		var created bool
		err := tx.QueryRow(ctx, `
			WITH ins AS (
				INSERT INTO users (email, roles, created_at, updated_at) VALUES ($1, $2, $3, $3)
				ON CONFLICT (email) DO NOTHING RETURNING 1)
			SELECT EXISTS (SELECT 1 FROM ins)`, email, roleStrings(roles), now).Scan(&created)
		if err != nil {
			return fmt.Errorf("insert user: %w", err)
		}
		cur, err := scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE email = $1 FOR UPDATE`, email))
		if err != nil {
			return fmt.Errorf("get user: %w", err)
		}
		if created {
			u = cur
			return db.audit(ctx, tx, actor, fieldpass.AuditUserCreate, fieldpass.UserTarget(email), map[string]any{
				"user_id": cur.ID, "roles": roleStrings(roles),
			})
		}
		if slices.Equal(cur.Roles, roles) {
			u = cur
			return nil
		}
		u, err = scanUser(tx.QueryRow(ctx, `UPDATE users SET roles = $2, updated_at = $3 WHERE id = $1 RETURNING `+userColumns,
			cur.ID, roleStrings(roles), now))
		if err != nil {
			return fmt.Errorf("update roles: %w", err)
		}
		return db.audit(ctx, tx, actor, fieldpass.AuditUserRoles, fieldpass.UserTarget(email), map[string]any{
			"user_id": cur.ID, "from": roleStrings(cur.Roles), "to": roleStrings(roles),
		})
	})
	if err != nil {
		return nil, wrap(err, "ensure user "+email)
	}
	return u, nil
}

// User returns the user with email.
func (db *DB) User(ctx context.Context, email string) (*fieldpass.User, error) {
	email, err := fieldpass.NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	u, err := scanUser(db.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE email = $1`, email))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "user %s not found", email)
	}
	if err != nil {
		return nil, fmt.Errorf("get user %s: %w", email, err)
	}
	return u, nil
}

// Users returns every user, sorted by email.
func (db *DB) Users(ctx context.Context) ([]*fieldpass.User, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+userColumns+` FROM users ORDER BY email`)
	return collectRows(rows, err, "list users", scanUser)
}

// SetUserDisabled disables or enables the user email, recorded by actor as
// user.disable or user.enable. A disabled user's tokens are refused, and
// running brokers hear of the change on UsersChannel to cut the user's
// sessions. Asking for the state the user is in changes and records nothing.
func (db *DB) SetUserDisabled(ctx context.Context, actor, email string, disabled bool) (*fieldpass.User, error) {
	if err := checkActor(actor); err != nil {
		return nil, err
	}
	email, err := fieldpass.NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	var u *fieldpass.User
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		cur, err := scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE email = $1 FOR UPDATE`, email))
		if errors.Is(err, pgx.ErrNoRows) {
			return fieldpass.Errorf(fieldpass.ENOTFOUND, "user %s not found", email)
		}
		if err != nil {
			return fmt.Errorf("get user: %w", err)
		}
		if cur.Disabled == disabled {
			u = cur
			return nil
		}
		u, err = scanUser(tx.QueryRow(ctx, `UPDATE users SET disabled = $2, updated_at = $3 WHERE id = $1 RETURNING `+userColumns,
			cur.ID, disabled, db.now()))
		if err != nil {
			return fmt.Errorf("update user: %w", err)
		}
		action := fieldpass.AuditUserEnable
		if disabled {
			action = fieldpass.AuditUserDisable
		}
		return db.audit(ctx, tx, actor, action, fieldpass.UserTarget(email), map[string]any{"user_id": cur.ID})
	})
	if err != nil {
		return nil, wrap(err, "set user "+email)
	}
	return u, nil
}

const tokenColumns = `t.id::text, t.user_id::text, u.email, t.kind, t.created_at, t.expires_at,
	t.revoked_at, t.revoked_by, t.last_used_at`

func scanToken(row pgx.Row) (*fieldpass.Token, error) {
	var (
		t                   fieldpass.Token
		kind                string
		revokedAt, lastUsed *time.Time
		revokedBy           *string
	)
	if err := row.Scan(&t.ID, &t.UserID, &t.Email, &kind, &t.CreatedAt, &t.ExpiresAt, &revokedAt, &revokedBy, &lastUsed); err != nil {
		return nil, err
	}
	t.Kind = fieldpass.TokenKind(kind)
	t.CreatedAt, t.ExpiresAt = t.CreatedAt.UTC(), t.ExpiresAt.UTC()
	if revokedAt != nil {
		t.RevokedAt = revokedAt.UTC()
	}
	if lastUsed != nil {
		t.LastUsedAt = lastUsed.UTC()
	}
	t.RevokedBy = deref(revokedBy)
	return &t, nil
}

// IssueToken makes a token of kind for the existing user email, valid for
// ttl (1s to MaxTokenTTL), recorded by actor as token.issue. The token is
// returned once and stored only as a hash; the audit event holds its id,
// kind and expiry, never the token. A disabled user gets none.
func (db *DB) IssueToken(ctx context.Context, actor, email string, kind fieldpass.TokenKind, ttl time.Duration) (token string, t *fieldpass.Token, err error) {
	if err := checkActor(actor); err != nil {
		return "", nil, err
	}
	email, err = fieldpass.NormalizeEmail(email)
	if err != nil {
		return "", nil, err
	}
	if err := fieldpass.ValidateTokenKind(kind); err != nil {
		return "", nil, err
	}
	if ttl < time.Second || ttl > MaxTokenTTL {
		return "", nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid token lifetime %s: want at least 1s and at most %s", ttl, fieldpass.FormatDuration(MaxTokenTTL))
	}
	var secret [32]byte
	if _, err := io.ReadFull(db.rand(), secret[:]); err != nil {
		return "", nil, fmt.Errorf("generate token: %w", err)
	}
	token = fieldpass.FormatToken(secret)
	now := db.now()
	expires := now.Add(ttl).Truncate(time.Microsecond)

	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		u, err := scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE email = $1 FOR SHARE`, email))
		if errors.Is(err, pgx.ErrNoRows) {
			return fieldpass.Errorf(fieldpass.ENOTFOUND, "user %s not found", email)
		}
		if err != nil {
			return fmt.Errorf("get user: %w", err)
		}
		if u.Disabled {
			return fieldpass.Errorf(fieldpass.EFORBIDDEN, "user %s is disabled", email)
		}
		t, err = scanToken(tx.QueryRow(ctx, `
			WITH t AS (
				INSERT INTO tokens (token_hash, user_id, kind, created_at, expires_at)
				VALUES ($1, $2::uuid, $3, $4, $5) RETURNING *)
			SELECT `+tokenColumns+` FROM t JOIN users u ON u.id = t.user_id`,
			hashToken(token), u.ID, string(kind), now, expires))
		if err != nil {
			return fmt.Errorf("insert token: %w", err)
		}
		return db.audit(ctx, tx, actor, fieldpass.AuditTokenIssue, fieldpass.UserTarget(email), map[string]any{
			"token_id": t.ID, "kind": string(kind), "expires_at": expires.Format(time.RFC3339Nano),
		})
	})
	if err != nil {
		return "", nil, wrap(err, "issue token for "+email)
	}
	return token, t, nil
}

// Authenticate returns the user a token belongs to, and the token's record.
// It refuses, with a message that never repeats the token:
//
//	invalid    a string that is not a token at all
//	not_found  a well-formed token the store never issued (forged, or from another install)
//	expired    a token past its expiry
//	forbidden  a revoked token, or the token of a disabled user
//
// The HTTP layer answers all of them 401 (forbidden for a disabled user:
// 403). last_used_at is updated at most once a minute.
func (db *DB) Authenticate(ctx context.Context, token string) (*fieldpass.User, *fieldpass.Token, error) {
	if err := fieldpass.CheckToken(token); err != nil {
		return nil, nil, err
	}
	now := db.now()
	row := db.pool.QueryRow(ctx, `
		SELECT `+tokenColumns+`, u.disabled, u.roles, u.created_at, u.roles_checked_at
		FROM tokens t JOIN users u ON u.id = t.user_id
		WHERE t.token_hash = $1`, hashToken(token))
	var (
		t                   fieldpass.Token
		u                   fieldpass.User
		kind                string
		revokedAt, lastUsed *time.Time
		revokedBy           *string
		roles               []string
		rolesChecked        *time.Time
	)
	err := row.Scan(&t.ID, &t.UserID, &t.Email, &kind, &t.CreatedAt, &t.ExpiresAt, &revokedAt, &revokedBy, &lastUsed,
		&u.Disabled, &roles, &u.CreatedAt, &rolesChecked)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "unknown token: log in again")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("authenticate: %w", err)
	}
	t.Kind = fieldpass.TokenKind(kind)
	t.CreatedAt, t.ExpiresAt = t.CreatedAt.UTC(), t.ExpiresAt.UTC()
	t.RevokedBy = deref(revokedBy)
	if lastUsed != nil {
		t.LastUsedAt = lastUsed.UTC()
	}
	if revokedAt != nil {
		t.RevokedAt = revokedAt.UTC()
	}
	if err := t.Held(now); err != nil {
		return nil, nil, err
	}
	if u.Disabled {
		return nil, nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "user %s is disabled", t.Email)
	}
	u.ID, u.Email, u.CreatedAt = t.UserID, t.Email, u.CreatedAt.UTC()
	if rolesChecked != nil {
		u.RolesCheckedAt = rolesChecked.UTC()
	}
	for _, r := range roles {
		u.Roles = append(u.Roles, fieldpass.Role(r))
	}
	slices.Sort(u.Roles)

	if t.LastUsedAt.IsZero() || now.Sub(t.LastUsedAt) >= tokenTouchInterval {
		if _, err := db.pool.Exec(ctx, `
			UPDATE tokens SET last_used_at = $2
			WHERE id = $1::uuid AND (last_used_at IS NULL OR last_used_at < $2)`, t.ID, now); err != nil {
			return nil, nil, fmt.Errorf("authenticate: record use: %w", err)
		}
		t.LastUsedAt = now
	}
	return &u, &t, nil
}

// RevokeToken revokes the token with id, recorded by actor as token.revoke.
// Revoking a revoked token is a conflict.
func (db *DB) RevokeToken(ctx context.Context, actor, id string) (*fieldpass.Token, error) {
	if err := checkActor(actor); err != nil {
		return nil, err
	}
	if !uuidRE.MatchString(id) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid token id %q", id)
	}
	var t *fieldpass.Token
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		cur, err := scanToken(tx.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens t JOIN users u ON u.id = t.user_id
			WHERE t.id = $1::uuid FOR UPDATE OF t`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fieldpass.Errorf(fieldpass.ENOTFOUND, "token %s not found", id)
		}
		if err != nil {
			return fmt.Errorf("get token: %w", err)
		}
		if !cur.RevokedAt.IsZero() {
			return fieldpass.Errorf(fieldpass.ECONFLICT, "token %s was already revoked at %s", id, cur.RevokedAt.Format(time.RFC3339))
		}
		now := db.now()
		if _, err := tx.Exec(ctx, `UPDATE tokens SET revoked_at = $2, revoked_by = $3 WHERE id = $1::uuid`, id, now, actor); err != nil {
			return fmt.Errorf("revoke token: %w", err)
		}
		cur.RevokedAt, cur.RevokedBy = now, actor
		t = cur
		return db.audit(ctx, tx, actor, fieldpass.AuditTokenRevoke, fieldpass.UserTarget(cur.Email), map[string]any{
			"token_id": id, "kind": string(cur.Kind),
		})
	})
	if err != nil {
		return nil, wrap(err, "revoke token "+id)
	}
	return t, nil
}

// Tokens returns the tokens of the user email, newest first, revoked and
// expired ones included.
func (db *DB) Tokens(ctx context.Context, email string) ([]*fieldpass.Token, error) {
	email, err := fieldpass.NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	rows, err := db.pool.Query(ctx, `SELECT `+tokenColumns+` FROM tokens t JOIN users u ON u.id = t.user_id
		WHERE u.email = $1 ORDER BY t.created_at DESC, t.id`, email)
	return collectRows(rows, err, "list tokens", scanToken)
}

// audit appends an event inside tx (see AppendAuditTx): call it last.
func (db *DB) audit(ctx context.Context, tx pgx.Tx, actor, action, target string, details map[string]any) error {
	_, err := db.AppendAuditTx(ctx, tx, fieldpass.AuditEvent{Actor: actor, Action: action, Target: target, Details: details})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// wrap passes a *fieldpass.Error through as it is, and wraps anything else
// with what was being done.
func wrap(err error, what string) error {
	var fe *fieldpass.Error
	if errors.As(err, &fe) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// TokensChannel is the channel on which the database announces a token's
// id when it is revoked, so that a running broker ends the sessions that
// token opened within a second. Expiry is not announced: the broker
// watches each session's token's expiry itself.
const TokensChannel = "fieldpass_tokens"

// ListenTokensApplicationName names the token listener's connection, for
// pg_stat_activity.
const ListenTokensApplicationName = "fieldpass listen tokens"

// ListenTokens calls fn with the id of each token revoked, as ListenGrants
// does for grants: fn("") once the LISTEN is in place and after every
// reconnect (re-read every token in use: notifications may have been
// missed).
func (db *DB) ListenTokens(ctx context.Context, fn func(tokenID string)) error {
	return db.listen(ctx, TokensChannel, ListenTokensApplicationName, fn)
}

// Token returns the record of the token with id (never the token itself).
func (db *DB) Token(ctx context.Context, id string) (*fieldpass.Token, error) {
	if !uuidRE.MatchString(id) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid token id %q", id)
	}
	t, err := scanToken(db.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens t JOIN users u ON u.id = t.user_id
		WHERE t.id = $1::uuid`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "token %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// sessionTokenHolds checks that t, token id as read for a session, still
// authenticates email at now.
func sessionTokenHolds(t *fieldpass.Token, id, email string, now time.Time) error {
	// The caller presented this token a moment ago: when it no longer
	// holds, the caller is no longer authenticated.
	switch {
	case t.Email != email:
		return fieldpass.Deny(fieldpass.DenyUnauthenticated, fieldpass.Errorf(fieldpass.EFORBIDDEN, "token %s is not %s's", id, email))
	}
	return fieldpass.Deny(fieldpass.DenyUnauthenticated, t.Held(now))
}
