package broker

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// Two brokers' keepers over one real database: the device is served by one
// of them at a time; when the holder stops renewing (its database access
// is gone), it stops serving by its own clock before the other takes over.
func TestLeaseKeeperHandover(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tok, _, err := db.CreateEnrollmentToken(ctx, "pump-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("pump-1"))
	key := base64.StdEncoding.EncodeToString(sum[:])
	dev, err := db.Enroll(ctx, tok, key, "v1", func(seq int64) (netip.Addr, error) { return netip.MustParseAddr("10.77.0.9"), nil })
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var mu sync.Mutex
	var lostA []string
	a := newLeaseKeeper(db, "broker-a", time.Second, quiet, func(id string) { mu.Lock(); lostA = append(lostA, id); mu.Unlock() })
	b := newLeaseKeeper(db, "broker-b", time.Second, quiet, nil)

	if err := a.acquire(ctx, dev.ID); err != nil || !a.holds(dev.ID) {
		t.Fatalf("a: acquire = %v, holds = %v", err, a.holds(dev.ID))
	}
	// The device turns up at b too (it moved): b waits for a's lease.
	if err := b.acquire(ctx, dev.ID); err != nil || b.holds(dev.ID) {
		t.Fatalf("b while a holds: acquire = %v, holds = %v", err, b.holds(dev.ID))
	}
	// a renews for a while; b's retries keep failing.
	for range 4 {
		time.Sleep(300 * time.Millisecond)
		a.renew(ctx)
		b.renew(ctx)
		if !a.holds(dev.ID) || b.holds(dev.ID) {
			t.Fatalf("while a renews: a holds %v, b holds %v", a.holds(dev.ID), b.holds(dev.ID))
		}
	}
	// a stops renewing (cut off). Whenever b gets the device, a must
	// already consider it gone.
	deadline := time.Now().Add(5 * time.Second)
	for !b.holds(dev.ID) {
		if time.Now().After(deadline) {
			t.Fatal("b never took the device over")
		}
		time.Sleep(50 * time.Millisecond)
		b.renew(ctx)
	}
	if a.holds(dev.ID) {
		t.Fatal("two holders: a still serves the device b took")
	}
	// a's next renewal learns it lost the lease, and says so once.
	a.renew(ctx)
	mu.Lock()
	defer mu.Unlock()
	if len(lostA) != 1 || lostA[0] != dev.ID {
		t.Fatalf("a's lost calls = %v, want [%s]", lostA, dev.ID)
	}
	if e := b.epoch(dev.ID); e != 2 {
		t.Fatalf("b's epoch = %d, want 2", e)
	}
}

func TestNudgePace(t *testing.T) {
	for _, tt := range []struct {
		rate, queued int
		want         time.Duration
	}{
		{50, 0, 20 * time.Millisecond},
		{50, 200, 20 * time.Millisecond},        // a small fleet: the set pace
		{50, 10000, time.Second / 222},          // 10,000 within 45 s
		{50, 60000, time.Second / nudgeMaxRate}, // capped
		{500, 10000, 2 * time.Millisecond},      // a faster setting stands
	} {
		if got := nudgePace(tt.rate, tt.queued); got != tt.want {
			t.Errorf("nudgePace(%d, %d) = %s, want %s", tt.rate, tt.queued, got, tt.want)
		}
	}
}

// TestNudgeSchedule: a restart's queue is drained at the pace it was given
// when it was longest, not at a pace that falls with what is left.
func TestNudgeSchedule(t *testing.T) {
	held, total := 0, time.Duration(0)
	for queued := 9999; queued >= 0; queued-- {
		var gap time.Duration
		gap, held = nudgeSchedule(50, held, queued)
		total += gap
	}
	if total > 46*time.Second {
		t.Errorf("10,000 nudges take %s of gaps, want the 45 s nudgeWithin promises", total)
	}
	if held != 0 {
		t.Errorf("held rate %d/s after the queue emptied, want 0 (the set pace again)", held)
	}
	if gap, _ := nudgeSchedule(50, 0, 3); gap != 20*time.Millisecond {
		t.Errorf("a short queue: gap %s, want the set pace's 20ms", gap)
	}
}

// epoch returns the epoch of this broker's lease on deviceID (0: none).
func (k *leaseKeeper) epoch(deviceID string) int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	if h := k.held[deviceID]; h != nil {
		return h.lease.Epoch
	}
	return 0
}
