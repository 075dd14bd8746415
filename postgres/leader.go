package postgres

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"
)

// leaderKeySpace keeps Lead's advisory lock keys apart from the
// transaction-scoped ones (the audit chain's, GrantBrokerRole's): the upper
// 32 bits are "fpld", the lower are a hash of the job's name.
const leaderKeySpace int64 = 0x6670_6c64 << 32

func leaderKey(job string) int64 {
	h := fnv.New32a()
	h.Write([]byte(job))
	return leaderKeySpace | int64(h.Sum32())
}

// Lead runs fn while this process leads job among every broker that shares
// the database, and keeps trying to lead until ctx ends: jobs that must run
// once per fleet (the audit checkpoint signer, the retention pass, calling
// back a dead broker's devices) run in exactly one broker at a time.
//
// Leadership is a session-level advisory lock held on a connection of its
// own: it ends when that connection does (the broker died, or lost the
// database), and Postgres then lets the next broker take it. While leading,
// the connection is checked every retry; when the check fails, fn's context
// is cancelled and Lead returns to trying. A new leader waits two retries
// before it starts fn, by which time a leader that lost its connection has
// stopped. fn should return when its
// context ends. retry is how often a follower tries to take over (default
// 5 s).
func (db *DB) Lead(ctx context.Context, job string, retry time.Duration, fn func(ctx context.Context)) {
	if retry <= 0 {
		retry = 5 * time.Second
	}
	key := leaderKey(job)
	t := time.NewTicker(retry)
	defer t.Stop()
	for {
		if err := db.leadOnce(ctx, job, key, retry, fn); err != nil && ctx.Err() == nil {
			db.logger().Warn("leadership", "job", job, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// leadOnce takes the lock if it is free and, if so, runs fn until ctx ends
// or the connection holding the lock fails.
func (db *DB) leadOnce(ctx context.Context, job string, key int64, check time.Duration, fn func(ctx context.Context)) error {
	c, err := db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The lock lives as long as this connection: it never goes back to
	// the pool holding it.
	conn := c.Hijack()
	defer conn.Close(context.Background())
	// When this broker is cut off, the server drops the connection, and
	// so frees the lock for the next broker, after about 10+3*3 s of
	// silence rather than the system's default of hours (TCP only; a Unix
	// socket has no keepalives and needs none).
	for _, set := range []string{`SET tcp_keepalives_idle = 10`, `SET tcp_keepalives_interval = 3`, `SET tcp_keepalives_count = 3`} {
		if _, err := conn.Exec(ctx, set); err != nil {
			return fmt.Errorf("keepalives: %w", err)
		}
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
		return fmt.Errorf("try lock: %w", err)
	}
	if !got {
		return nil
	}
	// A leader that lost its connection stops within two checks (its
	// ping fails, or times out, at the next one); the lock can be ours
	// before it has noticed. Wait that long before starting, so two
	// never run at once.
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(2 * check):
	}
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("lost the connection that holds the lead: %w", err)
	}
	db.logger().Info("leading", "job", job)
	jobCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); fn(jobCtx) }()
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		select {
		case <-done:
			cancel()
			return nil
		case <-t.C:
			pctx, pcancel := context.WithTimeout(ctx, check)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				// Without the connection the lock may already be
				// someone else's: stop before going on.
				cancel()
				<-done
				return fmt.Errorf("lost the connection that holds the lead: %w", err)
			}
		}
	}
}
