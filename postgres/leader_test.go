package postgres_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// Three brokers lead one job: one at a time; when the leader's connection
// dies (the server ends it, as it does when the broker is cut off), the
// leader stops and another takes over.
func TestLeadOneAtATime(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		leading atomic.Int32 // how many lead now
		maxSeen atomic.Int32
		mu      sync.Mutex
		leaders []int
		wg      sync.WaitGroup
	)
	dbs := make([]*postgres.DB, 3)
	for i := range dbs {
		db, err := postgres.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		dbs[i] = db
		wg.Add(1)
		go func() {
			defer wg.Done()
			db.Lead(ctx, "checkpoint", 100*time.Millisecond, func(ctx context.Context) {
				n := leading.Add(1)
				if n > maxSeen.Load() {
					maxSeen.Store(n)
				}
				mu.Lock()
				leaders = append(leaders, i)
				mu.Unlock()
				<-ctx.Done()
				leading.Add(-1)
			})
		}()
	}
	waitLeaders := func(n int) int {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			got := len(leaders)
			var last int
			if got > 0 {
				last = leaders[got-1]
			}
			mu.Unlock()
			if got >= n {
				return last
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no leader #%d within 10s", n)
		return -1
	}
	first := waitLeaders(1)
	time.Sleep(500 * time.Millisecond) // followers retry meanwhile
	// The server ends the connection holding the lead.
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var ended bool
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&ended); err != nil || !ended {
		t.Fatalf("terminate the leader's connection: %v %v", ended, err)
	}
	second := waitLeaders(2)
	t.Logf("leader %d, then %d", first, second)
	cancel()
	wg.Wait()
	for _, db := range dbs {
		db.Close()
	}
	if m := maxSeen.Load(); m != 1 {
		t.Fatalf("%d led at once, want 1", m)
	}
}
