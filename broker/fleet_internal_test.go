package broker

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// spread evens the live brokers out, the least loaded first, and gives the
// same split for the same inputs in any order.
func TestSpread(t *testing.T) {
	cbs := func(n int) []postgres.Callback {
		out := make([]postgres.Callback, n)
		for i := range out {
			out[i].DeviceID = fmt.Sprintf("00000000-0000-0000-0000-%012d", n-i) // reverse order
		}
		return out
	}
	for _, c := range []struct {
		name    string
		devices int
		loads   []postgres.BrokerLoad
		want    map[string]int
	}{
		{"even", 10, []postgres.BrokerLoad{{ID: "broker-c", Devices: 0}, {ID: "broker-a", Devices: 0}}, map[string]int{"broker-a": 5, "broker-c": 5}},
		{"odd, first by id", 5, []postgres.BrokerLoad{{ID: "broker-c", Devices: 0}, {ID: "broker-a", Devices: 0}}, map[string]int{"broker-a": 3, "broker-c": 2}},
		{"the less loaded first", 6, []postgres.BrokerLoad{{ID: "broker-a", Devices: 4}, {ID: "broker-c", Devices: 0}}, map[string]int{"broker-a": 1, "broker-c": 5}},
		{"too few to even out", 2, []postgres.BrokerLoad{{ID: "broker-a", Devices: 9}, {ID: "broker-c", Devices: 0}}, map[string]int{"broker-c": 2}},
		{"one left", 3, []postgres.BrokerLoad{{ID: "broker-a", Devices: 7}}, map[string]int{"broker-a": 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			x, y := cbs(c.devices), cbs(c.devices)
			y[0], y[len(y)-1] = y[len(y)-1], y[0]
			spread(x, c.loads)
			spread(y, c.loads)
			got := map[string]int{}
			for i := range x {
				got[x[i].BrokerID]++
				if x[i] != y[i] {
					t.Errorf("device %d: %+v in one order, %+v in another", i, x[i], y[i])
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("split %v, want %v", got, c.want)
			}
		})
	}
}

// A device that says hello while another broker's lease on it is about to
// end (a dead broker's device, called back) is taken when that lease ends,
// not at the next renewal; after the keeper stopped, no longer.
func TestLeaseTakenWhenTheOtherEnds(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	enroll := func(name string) string {
		tok, _, err := db.CreateEnrollmentToken(ctx, name, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(name))
		d, err := db.Enroll(ctx, tok, base64.StdEncoding.EncodeToString(sum[:]), "v1", func(seq int64) (netip.Addr, error) {
			return netip.AddrFrom4([4]byte{10, 77, 0, byte(seq + 1)}), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return d.ID
	}
	p1, p2 := enroll("pump-1"), enroll("pump-2")
	quiet := slog.New(slog.DiscardHandler)
	const ttl = 3 * time.Second
	dead := newLeaseKeeper(db, "broker-dead", ttl, quiet, nil)
	for _, id := range []string{p1, p2} {
		if err := dead.acquire(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Now()
	// broker-dead renews no more. The devices say hello at broker-a
	// shortly before its leases end (within TTL/3): never renewed, a
	// takes them at their end.
	a := newLeaseKeeper(db, "broker-a", ttl, quiet, nil)
	time.Sleep(ttl - ttl/3 + 200*time.Millisecond)
	if err := a.acquire(ctx, p1); err != nil || a.holds(p1) {
		t.Fatalf("acquire while held: %v, holds %v", err, a.holds(p1))
	}
	deadline := took.Add(ttl + time.Second)
	for !a.holds(p1) {
		if time.Now().After(deadline) {
			t.Fatalf("broker-a did not take the device within a second of the other lease's end")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("taken %s after the other lease's start (TTL %s)", time.Since(took).Round(time.Millisecond), ttl)

	// A keeper that stopped takes nothing more: a lease taken now would
	// keep the device from every live broker for a TTL.
	if err := dead.acquire(ctx, p2); err != nil || !dead.holds(p2) {
		t.Fatalf("broker-dead takes pump-2 again: %v", err)
	}
	took = time.Now()
	stopped := newLeaseKeeper(db, "broker-b", ttl, quiet, nil)
	time.Sleep(ttl - ttl/3 + 200*time.Millisecond)
	if err := stopped.acquire(ctx, p2); err != nil || stopped.holds(p2) {
		t.Fatalf("broker-b's acquire while held: %v, holds %v", err, stopped.holds(p2))
	}
	sctx, stop := context.WithCancel(ctx)
	stop()
	stopped.run(sctx)
	time.Sleep(time.Until(took.Add(ttl + 500*time.Millisecond)))
	if l, ok, err := db.DeviceHolder(ctx, p2); err != nil || ok {
		t.Fatalf("pump-2 held by %+v (%v) after broker-b's keeper stopped", l, err)
	}
}
