package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DevicesChannel is the LISTEN/NOTIFY channel on which the database announces
// device changes that affect the broker's WireGuard peers (a trigger in the
// schema sends the device id). Presence updates are not announced.
const DevicesChannel = "fieldpass_devices"

// ListenApplicationName is the application_name of the connection that
// ListenDevices holds, so that operators can find it in pg_stat_activity.
const ListenApplicationName = "fieldpass listen devices"

const (
	// listenIdleCheck is how long the listener waits for a notification before
	// it pings the server: a connection that died without a word (a failover,
	// a dropped NAT mapping) is noticed within this, not at TCP keepalive's pace.
	listenIdleCheck = 30 * time.Second
	listenTimeout   = 10 * time.Second
	listenMinDelay  = 100 * time.Millisecond
	listenMaxDelay  = 10 * time.Second
	// listenStable is how long a connection must have listened for the
	// backoff to start over, so that a server that accepts and then drops
	// every connection is not hammered (nor the caller made to reload).
	listenStable = time.Minute
)

// ListenDevices calls fn with the id of each device whose state, key or
// tunnel address changes, or that is enrolled, as the database announces it
// on DevicesChannel. It holds a connection of its own, outside the pool.
//
// fn("") means "reload everything": notifications may have been missed. It
// is called once every time the LISTEN is in place, that is right after the
// first connection and again after each reconnect, so a caller that loads its
// state in response misses no change between its load and the next
// notification. A lost connection is retried with capped, jittered
// exponential backoff and never given up on.
//
// fn runs on the listener's goroutine and must not block for long: while it
// runs, notifications queue in the connection. Hand slow work to another
// goroutine.
//
// ListenDevices returns nil once ctx is done, and an error only for a nil fn.
func (db *DB) ListenDevices(ctx context.Context, fn func(deviceID string)) error {
	return db.listen(ctx, DevicesChannel, ListenApplicationName, fn)
}

// backoff returns the wait before reconnect attempt n (0-based): none for the
// first after a stable connection, then doubling from listenMinDelay up to listenMaxDelay, with the
// upper half jittered so that brokers cut off together do not return together.
func backoff(n int) time.Duration {
	if n == 0 {
		return 0
	}
	d := listenMaxDelay
	if n < 16 && listenMinDelay<<(n-1) < listenMaxDelay {
		d = listenMinDelay << (n - 1)
	}
	return d/2 + rand.N(d/2+1)
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
		listened, err := listenOnce(ctx, cfg, channel, fn)
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

// listenOnce connects, listens on channel and delivers notifications until
// the connection fails or ctx is done. listened reports whether the LISTEN
// was in place (and fn("") called).
func listenOnce(ctx context.Context, cfg *pgx.ConnConfig, channel string, fn func(string)) (listened bool, err error) {
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
