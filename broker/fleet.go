package broker

// Several brokers, one fleet (docs/DESIGN.md, "Several brokers"). With
// Config.Fleet, a broker:
//   - holds a device only while it holds the device's lease (lease.go): a
//     device that says hello here is served here once its lease is ours,
//     and stops being served the moment the lease is lost;
//   - says it is alive in the broker roll every LeaseTTL/3, with the
//     address of its brokerlink listener, so the others can carry a
//     person's connect here;
//   - takes part in the fleet's janitor (one broker at a time, by
//     postgres.Lead): a broker whose time in the roll ran out without a
//     clean stop is claimed once, its open sessions are ended
//     broker_restart, and its devices are called back (nudged) from here.
// Without it a broker works alone, as before: no lease, no roll.

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/brokerlink"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/wgnet"
)

// FleetConfig configures a broker that shares its fleet with others.
type FleetConfig struct {
	// LeaseTTL is how long a device's lease lasts unrenewed (default
	// 15 s): after a broker is cut off, its devices may be taken over by
	// another this long after its last renewal.
	LeaseTTL time.Duration
	// PeerAddr is the host:port where the other brokers reach this one's
	// brokerlink listener (recorded in the roll).
	PeerAddr string
	// Links dials the other brokers (the operator's CA, this broker's
	// certificate).
	Links *brokerlink.Dialer
}

type fleet struct {
	cfg     FleetConfig
	leases  *leaseKeeper
	started time.Time // this run's start, in the broker roll
}

// startFleet makes b one of several brokers sharing its database
// (Config.Fleet).
func (b *Broker) startFleet(cfg FleetConfig) {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 15 * time.Second
	}
	f := &fleet{cfg: cfg, started: time.Now()}
	f.leases = newLeaseKeeper(b.db, b.cfg.ID, cfg.LeaseTTL, b.log, func(deviceID string) { b.leaseLost(deviceID) })
	b.fleet = f
}

// Serves reports whether b serves device id now: always when it works
// alone; with a fleet, only while it holds the device's lease.
func (b *Broker) Serves(deviceID string) bool { return b.serves(deviceID) }

// serves reports whether b may serve device id now: always when it works
// alone; with a fleet, only while it holds the device's lease.
func (b *Broker) serves(deviceID string) bool {
	return b.fleet == nil || b.fleet.leases.holds(deviceID)
}

// admitToFleet takes the lease of a device saying hello, before the hello
// is answered. A lease another broker still holds is no refusal: the
// device chose this broker, and is served here once that lease ends. An
// error (the database does not answer) is: the device should try another
// broker.
func (b *Broker) admitToFleet(p *peer) error {
	if b.fleet == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.fleet.cfg.LeaseTTL/3)
	defer cancel()
	return b.fleet.leases.acquire(ctx, p.dev.ID)
}

// deviceDown is called when a device's tunnel here is gone.
func (b *Broker) deviceDown(p *peer) {
	if b.fleet == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.fleet.leases.release(ctx, p.dev.ID)
}

// leaseLost stops serving a device whose lease this broker lost: its
// tunnel here is closed, and with it every stream and session on it.
func (b *Broker) leaseLost(deviceID string) {
	b.mu.Lock()
	p := b.byID[deviceID]
	var sess interface{ Close() error }
	if p != nil && p.sess != nil {
		sess = p.sess
	}
	b.mu.Unlock()
	if sess != nil {
		sess.Close()
	}
}

// runFleet keeps this broker in the roll, its leases renewed, and takes
// its turn at the janitor, until ctx ends; then it leaves the roll cleanly
// (its leases end at once).
func (b *Broker) runFleet(ctx context.Context) {
	f := b.fleet
	if f == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); f.leases.run(ctx) }()
	go func() { defer wg.Done(); b.rollLoop(ctx) }()
	go func() {
		defer wg.Done()
		b.db.Lead(ctx, "fleet-janitor", f.cfg.LeaseTTL/3, b.janitor)
	}()
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.db.BrokerStopped(sctx, b.cfg.ID); err != nil {
		b.log.Warn("leave the broker roll", "err", err)
	}
}

func (b *Broker) rollLoop(ctx context.Context) {
	f := b.fleet
	t := time.NewTicker(f.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		actx, cancel := context.WithTimeout(ctx, f.cfg.LeaseTTL/3)
		if err := b.db.BrokerAlive(actx, b.cfg.ID, f.cfg.PeerAddr, f.started, f.cfg.LeaseTTL); err != nil && ctx.Err() == nil {
			b.log.Warn("broker roll", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// janitor runs in one broker of the fleet at a time: it claims brokers
// that stopped renewing without a clean stop, ends their open sessions
// once (broker_restart) and calls their devices back.
func (b *Broker) janitor(ctx context.Context) {
	t := time.NewTicker(b.fleet.cfg.LeaseTTL)
	defer t.Stop()
	for {
		b.sweepDeadBrokers(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (b *Broker) sweepDeadBrokers(ctx context.Context) {
	brokers, err := b.db.Brokers(ctx)
	if err != nil {
		b.log.Warn("read the broker roll", "err", err)
		return
	}
	for _, br := range brokers {
		if br.ID == b.cfg.ID || !br.Stopped.IsZero() || time.Now().Before(br.AliveUntil) {
			continue
		}
		ok, err := b.db.ClaimDeadBroker(ctx, br.ID)
		if err != nil || !ok {
			continue
		}
		// Where its devices were last heard, read before they are marked
		// offline: this broker's own copy of their presence dates from
		// when it loaded them, before most of them connected anywhere.
		devs, err := b.db.PeerDevices(ctx)
		if err != nil {
			b.log.Warn("read a dead broker's devices", "broker", br.ID, "err", err)
		}
		n, err := b.db.CloseOpenSessions(ctx, br.ID, fieldpass.EndBrokerRestart)
		if err != nil {
			b.log.Error("close a dead broker's sessions", "broker", br.ID, "err", err)
		}
		if err := b.db.MarkBrokerOffline(ctx, br.ID); err != nil {
			b.log.Warn("mark a dead broker's devices offline", "broker", br.ID, "err", err)
		}
		b.log.Warn("broker gone without a clean stop: its sessions ended, its devices called back", "broker", br.ID, "sessions_ended", n)
		b.nudgeDevicesOf(br.ID, devs)
	}
}

// nudgeDevicesOf calls back, at the nudge rate, the devices of devs that
// the broker brokerID held when it died, at the endpoints their presence
// rows name. The WireGuard peer here is pointed there first: it has never
// heard from a device that connected to another broker, so it would not
// know where to send the nudge.
func (b *Broker) nudgeDevicesOf(brokerID string, devs []*fieldpass.Device) {
	var ps []*peer
	for _, d := range devs {
		ep, err := netip.ParseAddrPort(d.Presence.Endpoint)
		if d.Presence.BrokerID != brokerID || !d.Presence.Online || err != nil {
			continue
		}
		b.mu.Lock()
		p := b.byID[d.ID]
		ok := p != nil && p.sess == nil && p.dev.PublicKey == d.PublicKey
		b.mu.Unlock()
		if !ok {
			continue
		}
		if err := b.dev.SetPeer(wgnet.Peer{
			PublicKey:  p.key,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.dev.TunnelAddr, p.dev.TunnelAddr.BitLen())},
			Endpoint:   ep,
		}); err != nil {
			b.log.Warn("point a dead broker's device at its last endpoint", "device", d.Name, "err", err)
			continue
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		b.queueNudge(p)
	}
}

// linkToHolder returns the link to the broker of the fleet that holds
// device id now, and that broker's id, when it is another broker.
func (b *Broker) linkToHolder(ctx context.Context, deviceID string) (*brokerlink.Link, string, bool) {
	if b.fleet == nil {
		return nil, "", false
	}
	holder, addr, held, err := b.db.HolderAddr(ctx, deviceID)
	if err != nil || !held || holder == b.cfg.ID {
		return nil, "", false
	}
	link, err := b.fleet.cfg.Links.Link(ctx, addr)
	if err != nil {
		b.log.Warn("link to the device's broker", "device_id", deviceID, "broker", holder, "addr", addr, "err", err)
		return nil, "", false
	}
	return link, holder, true
}

var _ leaseStore = (*postgres.DB)(nil)
