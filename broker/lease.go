package broker

// Leases: where several brokers share one fleet, a broker serves a device
// only while it holds the device's lease (postgres/lease.go). leaseKeeper
// holds this broker's leases: it takes one when a device says hello,
// renews them all every TTL/3 in one statement, gives one back when the
// device goes, and calls lost for a device whose lease ran out by this
// broker's own clock (counted from before each renewal was sent, so it ends
// here no later than in the database), so the device stops being served
// here before another broker may take it.

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/fieldpass/fieldpass/postgres"
)

// leaseStore is what leaseKeeper needs of the store.
type leaseStore interface {
	AcquireLease(ctx context.Context, deviceID, brokerID string, ttl time.Duration) (postgres.Lease, error)
	RenewLeases(ctx context.Context, brokerID string, leases []postgres.Lease, ttl time.Duration) ([]postgres.Lease, error)
	ReleaseLease(ctx context.Context, deviceID, brokerID string, epoch int64) error
}

type heldLease struct {
	lease postgres.Lease
	until time.Time // this broker's own end of the lease (monotonic clock)
}

type leaseKeeper struct {
	db       leaseStore
	brokerID string
	ttl      time.Duration
	log      *slog.Logger
	lost     func(deviceID string) // called without mu held

	mu   sync.Mutex
	held map[string]*heldLease // by device id
	// want are devices connected here whose lease another broker still
	// holds: retried at each renewal, so the device is served here once
	// the old holder's lease ends.
	want map[string]bool
	// stopped: run has returned; no lease is taken any more.
	stopped bool
}

func newLeaseKeeper(db leaseStore, brokerID string, ttl time.Duration, log *slog.Logger, lost func(string)) *leaseKeeper {
	return &leaseKeeper{db: db, brokerID: brokerID, ttl: ttl, log: log, lost: lost,
		held: map[string]*heldLease{}, want: map[string]bool{}}
}

// acquire takes deviceID's lease for this broker. A lease another broker
// holds is not an error: the device is remembered and retried once when
// that lease is due to end, if before the next renewal, and at every
// renewal; holds reports false until then.
func (k *leaseKeeper) acquire(ctx context.Context, deviceID string) error {
	return k.take(ctx, deviceID, true)
}

// leaseRetryMargin is how long after another broker's lease is due to end
// it is asked for again: the database's clock decides.
const leaseRetryMargin = 50 * time.Millisecond

// take is acquire; early: a refusal may schedule the one retry at the
// other lease's end (a retry does not schedule another, so clocks that
// disagree cannot make it a loop).
func (k *leaseKeeper) take(ctx context.Context, deviceID string, early bool) error {
	sent := time.Now()
	l, err := k.db.AcquireLease(ctx, deviceID, k.brokerID, k.ttl)
	k.mu.Lock()
	defer k.mu.Unlock()
	if errors.Is(err, postgres.ErrLeaseHeld) {
		k.want[deviceID] = true
		k.log.Info("device held by another broker: waiting for its lease to end", "device_id", deviceID, "err", err)
		var held *postgres.LeaseHeldError
		// A dead broker's device, called back here, says hello before
		// that broker's lease has run out: take it at its end, not up to
		// TTL/3 later at the next renewal.
		if early && errors.As(err, &held) && !k.stopped {
			if wait := max(time.Until(held.Expires), 0) + leaseRetryMargin; wait < k.ttl/3 {
				time.AfterFunc(wait, func() { k.retry(deviceID) })
			}
		}
		return nil
	}
	if err != nil {
		k.want[deviceID] = true
		return err
	}
	delete(k.want, deviceID)
	k.held[deviceID] = &heldLease{lease: l, until: sent.Add(k.ttl)}
	return nil
}

// retry is the one early retry take schedules.
func (k *leaseKeeper) retry(deviceID string) {
	k.mu.Lock()
	still := k.want[deviceID] && !k.stopped
	k.mu.Unlock()
	if !still {
		return // taken, gone, or this broker stopped: a lease now would outlive it
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.ttl/3)
	defer cancel()
	if err := k.take(ctx, deviceID, false); err != nil {
		k.log.Warn("acquire lease", "device_id", deviceID, "err", err)
	}
}

// holds reports whether this broker may serve deviceID now.
func (k *leaseKeeper) holds(deviceID string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	h := k.held[deviceID]
	return h != nil && time.Now().Before(h.until)
}

// release gives deviceID's lease back (the device went away here).
func (k *leaseKeeper) release(ctx context.Context, deviceID string) {
	k.mu.Lock()
	h := k.held[deviceID]
	delete(k.held, deviceID)
	delete(k.want, deviceID)
	k.mu.Unlock()
	if h == nil {
		return
	}
	if err := k.db.ReleaseLease(ctx, deviceID, k.brokerID, h.lease.Epoch); err != nil {
		// It runs out by itself within the TTL.
		k.log.Warn("release lease", "device_id", deviceID, "err", err)
	}
}

// run renews every TTL/3 until ctx ends, and drops leases whose own end
// has passed (renewals failed for a whole TTL: the database or the way to
// it is gone).
func (k *leaseKeeper) run(ctx context.Context) {
	t := time.NewTicker(k.ttl / 3)
	defer t.Stop()
	defer func() {
		k.mu.Lock()
		k.stopped = true
		k.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.renew(ctx)
	}
}

func (k *leaseKeeper) renew(ctx context.Context) {
	k.mu.Lock()
	leases := make([]postgres.Lease, 0, len(k.held))
	for _, h := range k.held {
		leases = append(leases, h.lease)
	}
	var wanted []string
	for id := range k.want {
		wanted = append(wanted, id)
	}
	k.mu.Unlock()

	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, k.ttl/3)
	renewed, err := k.db.RenewLeases(rctx, k.brokerID, leases, k.ttl)
	cancel()
	var lost []string
	k.mu.Lock()
	if err == nil {
		kept := map[string]bool{}
		for _, l := range renewed {
			kept[l.DeviceID] = true
			if h := k.held[l.DeviceID]; h != nil && h.lease.Epoch == l.Epoch {
				h.until = sent.Add(k.ttl)
				h.lease.Expires = l.Expires
			}
		}
		for _, l := range leases {
			if !kept[l.DeviceID] && k.held[l.DeviceID] != nil && k.held[l.DeviceID].lease.Epoch == l.Epoch {
				delete(k.held, l.DeviceID)
				lost = append(lost, l.DeviceID)
			}
		}
	} else {
		k.log.Warn("renew leases", "leases", len(leases), "err", err)
	}
	now := time.Now()
	for id, h := range k.held {
		if !now.Before(h.until) {
			delete(k.held, id)
			lost = append(lost, id)
		}
	}
	k.mu.Unlock()
	for _, id := range lost {
		k.log.Warn("lease lost: the device is no longer served here", "device_id", id)
		if k.lost != nil {
			k.lost(id)
		}
	}
	for _, id := range wanted {
		k.mu.Lock()
		still := k.want[id]
		k.mu.Unlock()
		if !still {
			continue // gone meanwhile
		}
		actx, cancel := context.WithTimeout(ctx, k.ttl/3)
		if err := k.acquire(actx, id); err != nil {
			k.log.Warn("acquire lease", "device_id", id, "err", err)
		}
		cancel()
	}
}
