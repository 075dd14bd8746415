package postgres_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

func TestLeaseOneHolder(t *testing.T) {
	s := mustOpen(t)
	ctx := context.Background()
	dev := s.mustEnroll(t, "pump-1", 1)

	a, err := s.AcquireLease(ctx, dev.ID, "broker-a", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a.Epoch != 1 || a.BrokerID != "broker-a" {
		t.Fatalf("first lease = %+v, want broker-a epoch 1", a)
	}
	// Another broker is refused while the lease lives, and told by whom.
	_, err = s.AcquireLease(ctx, dev.ID, "broker-b", time.Second)
	var held *postgres.LeaseHeldError
	if !errors.As(err, &held) || !errors.Is(err, postgres.ErrLeaseHeld) || held.Holder != "broker-a" || held.Device != "pump-1" {
		t.Fatalf("broker-b's acquire: err = %v, want held by broker-a", err)
	}
	// The holder's renewal keeps the epoch.
	again, err := s.AcquireLease(ctx, dev.ID, "broker-a", time.Second)
	if err != nil || again.Epoch != 1 {
		t.Fatalf("renewal by acquire = %+v, %v; want epoch 1", again, err)
	}
	renewed, err := s.RenewLeases(ctx, "broker-a", []postgres.Lease{a}, time.Second)
	if err != nil || len(renewed) != 1 || !renewed[0].Expires.After(a.Expires) {
		t.Fatalf("RenewLeases = %+v, %v; want one lease expiring after %s", renewed, err, a.Expires)
	}

	// Expired: taken over with a new epoch; the old holder's renewal
	// returns nothing, and it must stop serving the device.
	time.Sleep(1100 * time.Millisecond)
	b, err := s.AcquireLease(ctx, dev.ID, "broker-b", time.Second)
	if err != nil || b.Epoch != 2 || b.BrokerID != "broker-b" {
		t.Fatalf("takeover = %+v, %v; want broker-b epoch 2", b, err)
	}
	lost, err := s.RenewLeases(ctx, "broker-a", []postgres.Lease{a}, time.Second)
	if err != nil || len(lost) != 0 {
		t.Fatalf("the old holder's renewal = %+v, %v; want none", lost, err)
	}
	if h, ok, err := s.DeviceHolder(ctx, dev.ID); err != nil || !ok || h.BrokerID != "broker-b" || h.Epoch != 2 {
		t.Fatalf("DeviceHolder = %+v %v %v; want broker-b epoch 2", h, ok, err)
	}

	// A release lets the next broker in at once; a stale release (old
	// epoch) does nothing.
	if err := s.ReleaseLease(ctx, dev.ID, "broker-a", 1); err != nil {
		t.Fatal(err)
	}
	if h, ok, _ := s.DeviceHolder(ctx, dev.ID); !ok || h.BrokerID != "broker-b" {
		t.Fatalf("a stale release ended broker-b's lease: %+v %v", h, ok)
	}
	if err := s.ReleaseLease(ctx, dev.ID, "broker-b", 2); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.DeviceHolder(ctx, dev.ID); ok {
		t.Fatal("held after its holder released it")
	}
	c, err := s.AcquireLease(ctx, dev.ID, "broker-c", time.Second)
	if err != nil || c.Epoch != 3 {
		t.Fatalf("after release = %+v, %v; want broker-c epoch 3", c, err)
	}
}

// Brokers racing for the same free device: exactly one wins each round.
func TestLeaseRaceHasOneWinner(t *testing.T) {
	s := mustOpen(t)
	ctx := context.Background()
	dev := s.mustEnroll(t, "pump-1", 1)
	brokers := []string{"broker-a", "broker-b", "broker-c"}
	for round := range 5 {
		var (
			mu      sync.Mutex
			winners []postgres.Lease
			wg      sync.WaitGroup
		)
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := s.AcquireLease(ctx, dev.ID, brokers[i%len(brokers)], time.Second)
				if err != nil {
					if !errors.Is(err, postgres.ErrLeaseHeld) {
						t.Error(err)
					}
					return
				}
				mu.Lock()
				winners = append(winners, l)
				mu.Unlock()
			}()
		}
		wg.Wait()
		// Several acquires may succeed only as one broker renewing its own
		// lease: one holder, one epoch.
		if len(winners) == 0 {
			t.Fatalf("round %d: nobody holds the device", round)
		}
		for _, w := range winners[1:] {
			if w.BrokerID != winners[0].BrokerID || w.Epoch != winners[0].Epoch {
				t.Fatalf("round %d: two holders: %+v and %+v", round, winners[0], w)
			}
		}
		if winners[0].Epoch != int64(round+1) {
			t.Fatalf("round %d: epoch %d, want %d", round, winners[0].Epoch, round+1)
		}
		if err := s.ReleaseLease(ctx, dev.ID, winners[0].BrokerID, winners[0].Epoch); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBrokerRoll(t *testing.T) {
	s := mustOpen(t)
	ctx := context.Background()
	dev := s.mustEnroll(t, "pump-1", 1)
	start := time.Now()
	for _, id := range []string{"broker-a", "broker-b"} {
		if err := s.BrokerAlive(ctx, id, id+".internal:8443", start, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AcquireLease(ctx, dev.ID, "broker-a", time.Minute); err != nil {
		t.Fatal(err)
	}
	// A clean stop ends its leases at once.
	if err := s.BrokerStopped(ctx, "broker-a"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.DeviceHolder(ctx, dev.ID); ok {
		t.Fatal("a stopped broker still holds its device")
	}
	// broker-b goes silent: once its time is up, exactly one claimant wins.
	if ok, err := s.ClaimDeadBroker(ctx, "broker-b"); err != nil || ok {
		t.Fatalf("claim of a live broker = %v, %v; want false", ok, err)
	}
	time.Sleep(1100 * time.Millisecond)
	var wins int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.ClaimDeadBroker(ctx, "broker-b")
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d claimants won the dead broker, want 1", wins)
	}
	bs, err := s.Brokers(ctx)
	if err != nil || len(bs) != 2 || bs[0].Stopped.IsZero() || bs[1].Stopped.IsZero() || bs[1].PeerAddr != "broker-b.internal:8443" {
		t.Fatalf("Brokers = %+v, %v", bs, err)
	}
}

// Fencing: only the live holder of a leased device opens sessions on it.
func TestOpenSessionFencedByLease(t *testing.T) {
	s := mustOpen(t)
	ctx := context.Background()
	dev := s.mustEnroll(t, "pump-1", 1)
	s.mustUser(t, "eng@example.com", fieldpass.RoleEngineer)
	g := s.mustGrant(t, fieldpass.Grant{Subject: "eng@example.com", Devices: []string{"pump-1"}, Services: []string{"ssh"}})
	open := func(broker string) error {
		_, err := s.OpenSession(ctx, fieldpass.Session{User: "eng@example.com", Device: "pump-1", Service: "ssh", GrantID: g.ID, BrokerID: broker, ClientAddr: "192.0.2.1"})
		return err
	}
	if err := open("broker-a"); err != nil {
		t.Fatalf("no lease yet (one broker): %v", err)
	}
	if _, err := s.AcquireLease(ctx, dev.ID, "broker-a", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := open("broker-a"); err != nil {
		t.Fatalf("the holder: %v", err)
	}
	if err := open("broker-b"); fieldpass.ErrorCode(err) != fieldpass.EUNAVAILABLE {
		t.Fatalf("another broker: err = %v, want unavailable", err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := open("broker-a"); fieldpass.ErrorCode(err) != fieldpass.EUNAVAILABLE {
		t.Fatalf("the holder of an expired lease: err = %v, want unavailable", err)
	}
}

func TestLeasesReady(t *testing.T) {
	s := mustOpen(t)
	if err := s.LeasesReady(context.Background()); err != nil {
		t.Fatalf("a migrated database: %v", err)
	}
	if _, err := s.sql.Exec(context.Background(), `ALTER TABLE device_leases RENAME TO device_leases_gone`); err != nil {
		t.Fatal(err)
	}
	if err := s.LeasesReady(context.Background()); err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Fatalf("without the table: %v, want an error saying to migrate", err)
	}
}

func TestHolderAddr(t *testing.T) {
	s := mustOpen(t)
	ctx := context.Background()
	dev := s.mustEnroll(t, "pump-1", 1)
	if _, _, ok, err := s.HolderAddr(ctx, dev.ID); ok || err != nil {
		t.Fatalf("no lease: ok %v, %v", ok, err)
	}
	if err := s.BrokerAlive(ctx, "broker-a", "a.internal:7443", time.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLease(ctx, dev.ID, "broker-a", time.Minute); err != nil {
		t.Fatal(err)
	}
	if id, addr, ok, err := s.HolderAddr(ctx, dev.ID); !ok || err != nil || id != "broker-a" || addr != "a.internal:7443" {
		t.Fatalf("HolderAddr = %q %q %v %v", id, addr, ok, err)
	}
	if err := s.BrokerStopped(ctx, "broker-a"); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := s.HolderAddr(ctx, dev.ID); ok {
		t.Fatal("a stopped broker is still named the holder")
	}
}
