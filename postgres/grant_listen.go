package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// listen is ListenDevices for any channel.
func (db *DB) listen(ctx context.Context, channel, appName string, fn func(string)) error {
	if fn == nil {
		return fmt.Errorf("listen %s: nil callback", channel)
	}
	cfg := db.pool.Config().ConnConfig // a copy; changing it leaves the pool alone
	cfg.RuntimeParams["application_name"] = appName

	failures := 0
	for {
		start := time.Now()
		listened, err := listenChannelOnce(ctx, cfg, channel, fn)
		if ctx.Err() != nil {
			return nil
		}
		if listened && time.Since(start) > listenStable {
			failures = 0
		}
		delay := backoff(failures)
		failures++
		db.logger().WarnContext(ctx, "listener disconnected; reconnecting", "channel", channel, "err", err, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// listenChannelOnce is listenOnce for any channel.
func listenChannelOnce(ctx context.Context, cfg *pgx.ConnConfig, channel string, fn func(string)) (listened bool, err error) {
	connectCtx, cancel := context.WithTimeout(ctx, listenTimeout)
	conn, err := pgx.ConnectConfig(connectCtx, cfg)
	cancel()
	if err != nil {
		return false, err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return false, err
	}
	fn("")

	for {
		waitCtx, cancel := context.WithTimeout(ctx, listenIdleCheck)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			fn(n.Payload)
			continue
		case ctx.Err() != nil:
			return true, nil
		case pgconn.Timeout(err) && !conn.IsClosed():
			pingCtx, cancel := context.WithTimeout(ctx, listenTimeout)
			err = conn.Ping(pingCtx)
			cancel()
			if err == nil {
				continue
			}
		}
		return true, err
	}
}
