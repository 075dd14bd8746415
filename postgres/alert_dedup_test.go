package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestClaimAlertOnce: brokers claiming one alert at once, one wins; within
// the window nobody else does; past it, the next claim wins again. Other
// subjects and kinds are claims of their own.
func TestClaimAlertOnce(t *testing.T) {
	s := mustOpen(t)
	ctx := context.Background()
	const kind = fieldpass.AlertKind("device_offline")
	const dev = "0b9c5e6e-8a4e-4f7e-9a53-0d3c3b0f5d11"

	var wg sync.WaitGroup
	wins := make(chan string, 20)
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("alert-%02d", i)
			ok, err := s.ClaimAlert(ctx, kind, dev, id, time.Hour)
			if err != nil {
				errs <- err
			}
			if ok {
				wins <- id
			}
		}()
	}
	wg.Wait()
	close(wins)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var won []string
	for id := range wins {
		won = append(won, id)
	}
	if len(won) != 1 {
		t.Fatalf("%d of 20 concurrent claims won (%v); want exactly one", len(won), won)
	}
	var recorded string
	if err := s.sql.QueryRow(ctx, `SELECT alert_id FROM alert_claims WHERE kind = $1 AND subject = $2`, string(kind), dev).Scan(&recorded); err != nil || recorded != won[0] {
		t.Fatalf("row names %q (%v), want the winner %q", recorded, err, won[0])
	}

	if ok, err := s.ClaimAlert(ctx, kind, dev, "later", time.Hour); err != nil || ok {
		t.Fatalf("a claim within the window: %v, %v; want refused", ok, err)
	}
	if ok, err := s.ClaimAlert(ctx, kind, "another-device", "x", time.Hour); err != nil || !ok {
		t.Fatalf("another subject: %v, %v; want claimed", ok, err)
	}
	if ok, err := s.ClaimAlert(ctx, "clone_suspected", dev, "y", time.Hour); err != nil || !ok {
		t.Fatalf("another kind: %v, %v; want claimed", ok, err)
	}
	// The window passes (by the database's clock).
	if _, err := s.sql.Exec(ctx, `UPDATE alert_claims SET sent_at = sent_at - interval '61 minutes'`); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.ClaimAlert(ctx, kind, dev, "next-episode", time.Hour); err != nil || !ok {
		t.Fatalf("a claim past the window: %v, %v; want claimed", ok, err)
	}
	if _, err := s.ClaimAlert(ctx, kind, dev, "z", 0); fieldpass.ErrorCode(err) != fieldpass.EINVALID {
		t.Fatalf("zero window: %v, want invalid", err)
	}
}
