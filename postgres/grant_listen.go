package postgres

import (
	"context"
)

// GrantsChannel is the channel on which the database announces a grant's
// id when it is created and when it is revoked, so that a running broker
// starts honouring a new grant and cuts a revoked one's sessions within a
// second. Expiry is not announced: grants end at a known time, which the
// broker watches itself.
const GrantsChannel = "fieldpass_grants"

// UsersChannel is the channel on which the database announces a user's
// email when the user is disabled or enabled.
const UsersChannel = "fieldpass_users"

// Application names of the listeners' connections, for pg_stat_activity.
const (
	ListenGrantsApplicationName = "fieldpass listen grants"
	ListenUsersApplicationName  = "fieldpass listen users"
)

// ListenGrants calls fn with the id of each grant created or revoked, as
// the database announces it on GrantsChannel. It behaves as ListenDevices
// does: its own connection, fn("") once the LISTEN is in place and after
// every reconnect (reload: notifications may have been missed), retries
// with capped jittered backoff, and returns nil once ctx is done. fn must
// not block for long.
func (db *DB) ListenGrants(ctx context.Context, fn func(grantID string)) error {
	return db.listen(ctx, GrantsChannel, ListenGrantsApplicationName, fn)
}

// ListenUsers calls fn with the email of each user disabled or enabled, as
// ListenGrants does for grants.
func (db *DB) ListenUsers(ctx context.Context, fn func(email string)) error {
	return db.listen(ctx, UsersChannel, ListenUsersApplicationName, fn)
}
