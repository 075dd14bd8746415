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
//     broker_restart, and each of its devices is assigned to one live
//     broker, least loaded first (spread), in device_callbacks;
//   - calls back (nudges) the devices assigned to it, at its own nudge
//     pace, told by a notification and reading its share again every
//     LeaseTTL/3 in case one was missed.
// Without it a broker works alone, as before: no lease, no roll.

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

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
	// callbacks asks callbackLoop to read this broker's share of a dead
	// broker's devices now.
	callbacks chan struct{}
}

// callbackMaxAge is how long a dead broker's device stays assigned for a
// callback when it does not come back.
const callbackMaxAge = time.Hour

// startFleet makes b one of several brokers sharing its database
// (Config.Fleet).
func (b *Broker) startFleet(cfg FleetConfig) {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 15 * time.Second
	}
	f := &fleet{cfg: cfg, started: time.Now(), callbacks: make(chan struct{}, 1)}
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

// leaseHeld reports whether b is one of a fleet and holds device id's
// lease now.
func (b *Broker) leaseHeld(deviceID string) bool {
	return b.fleet != nil && b.fleet.leases.holds(deviceID)
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
	wg.Add(5)
	go func() { defer wg.Done(); f.leases.run(ctx) }()
	go func() { defer wg.Done(); b.rollLoop(ctx) }()
	go func() {
		defer wg.Done()
		b.db.Lead(ctx, "fleet-janitor", f.cfg.LeaseTTL/3, b.janitor)
	}()
	go func() {
		defer wg.Done()
		b.db.ListenCallbacks(ctx, func(id string) {
			if id == "" || id == b.cfg.ID {
				select {
				case f.callbacks <- struct{}{}:
				default:
				}
			}
		})
	}()
	go func() { defer wg.Done(); b.callbackLoop(ctx) }()
	wg.Wait()
	// The devices' sessions end first, their offline presence written,
	// so that none is written over a device already back elsewhere.
	b.endDeviceSessions()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.db.BrokerStopped(sctx, b.cfg.ID); err != nil {
		b.log.Warn("leave the broker roll", "err", err)
		return
	}
	b.handOff(sctx)
}

// endDeviceSessions closes every device's session here, as Close does, at
// the start of a clean stop rather than once the rest of the process has
// wound down (the HTTP server's graceful shutdown alone may take seconds),
// and gives their FINs and offline presence flushDelay to go out.
func (b *Broker) endDeviceSessions() {
	b.mu.Lock()
	var sessions []*yamux.Session
	for _, p := range b.byID {
		if p.sess != nil {
			sessions = append(sessions, p.sess)
			p.hist.offlineReason = "broker shutdown"
		}
	}
	b.mu.Unlock()
	for _, s := range sessions {
		s.Close()
	}
	if len(sessions) > 0 {
		time.Sleep(flushDelay)
	}
}

// handOff, at a clean stop, once this broker has left the roll and its
// devices' sessions are closed, spreads the devices it held over the live
// brokers, as the janitor does for a dead one: they are called back at
// once rather than finding out by themselves, after a dial into a tunnel
// nobody answers any more (20 s by default), that this broker is gone.
// That is what keeps a rolling restart short. A device that dials here
// meanwhile is refused (the tunnel listener is closed) and retries.
func (b *Broker) handOff(ctx context.Context) {
	if loads, err := b.db.BrokerLoads(ctx); err == nil && len(loads) == 0 {
		b.log.Info("stopped cleanly, the last broker running: devices come back when one starts")
		return
	}
	shares := b.spreadDevicesOf(ctx, b.cfg.ID)
	b.log.Info("stopped cleanly: devices handed to the live brokers", "callbacks", shares)
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
// once (broker_restart) and spreads their devices over the live brokers.
// It looks every LeaseTTL/3, so a dead broker is claimed within that of
// its time in the roll running out.
func (b *Broker) janitor(ctx context.Context) {
	t := time.NewTicker(b.fleet.cfg.LeaseTTL / 3)
	defer t.Stop()
	var pruned time.Time
	for {
		b.sweepDeadBrokers(ctx)
		if time.Since(pruned) > time.Minute {
			pruned = time.Now()
			if _, err := b.db.PruneCallbacks(ctx, callbackMaxAge); err != nil && ctx.Err() == nil {
				b.log.Warn("prune old callbacks", "err", err)
			}
		}
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
		n, err := b.db.CloseOpenSessions(ctx, br.ID, fieldpass.EndBrokerRestart)
		if err != nil {
			b.log.Error("close a dead broker's sessions", "broker", br.ID, "err", err)
		}
		if err := b.db.MarkBrokerOffline(ctx, br.ID); err != nil {
			b.log.Warn("mark a dead broker's devices offline", "broker", br.ID, "err", err)
		}
		shares := b.spreadDevicesOf(ctx, br.ID)
		b.log.Warn("broker gone without a clean stop: its sessions ended, its devices called back", "broker", br.ID, "sessions_ended", n, "callbacks", shares)
	}
}

// spreadDevicesOf assigns each device the dead broker brokerID held, and
// each device it was itself to call back for an earlier dead broker, to one
// live broker (spread), records that in device_callbacks and so tells those
// brokers. It returns how many each was given.
func (b *Broker) spreadDevicesOf(ctx context.Context, brokerID string) map[string]int {
	// Its leases ran out about when its time in the roll did, which is
	// when it is claimed; 2×TTL leaves room for the sweep's own pace.
	cbs, err := b.db.DevicesToCallBack(ctx, brokerID, 2*b.fleet.cfg.LeaseTTL)
	if err != nil {
		b.log.Error("read a dead broker's devices: they come back by their own retries", "broker", brokerID, "err", err)
		return nil
	}
	if len(cbs) == 0 {
		return nil
	}
	loads, err := b.db.BrokerLoads(ctx)
	if err != nil || len(loads) == 0 {
		// Nobody to give them to, by the database: call them back from
		// here, which is alive.
		b.log.Warn("read the live brokers: calling a dead broker's devices back from here", "broker", brokerID, "err", err)
		loads = []postgres.BrokerLoad{{ID: b.cfg.ID}}
	}
	spread(cbs, loads)
	if err := b.db.AssignCallbacks(ctx, brokerID, cbs); err != nil {
		b.log.Error("assign a dead broker's devices: they come back by their own retries", "broker", brokerID, "devices", len(cbs), "err", err)
		return nil
	}
	shares := map[string]int{}
	for _, c := range cbs {
		shares[c.BrokerID]++
	}
	return shares
}

// spread sets each callback's BrokerID to one of the live brokers: each
// device goes to the broker holding the fewest devices, counting those
// given so far, the first by id on a tie. Devices are taken in id order,
// so the same inputs give the same split, and the brokers end within one
// device of each other where the dead broker's devices suffice to even
// them out.
func spread(cbs []postgres.Callback, loads []postgres.BrokerLoad) {
	slices.SortFunc(cbs, func(x, y postgres.Callback) int { return strings.Compare(x.DeviceID, y.DeviceID) })
	ls := slices.Clone(loads)
	slices.SortFunc(ls, func(x, y postgres.BrokerLoad) int { return strings.Compare(x.ID, y.ID) })
	for i := range cbs {
		least := 0
		for j := range ls {
			if ls[j].Devices < ls[least].Devices {
				least = j
			}
		}
		cbs[i].BrokerID = ls[least].ID
		ls[least].Devices++
	}
}

// callbackLoop reads this broker's share of dead brokers' devices when told
// (ListenCallbacks) and every LeaseTTL/3, and calls them back.
func (b *Broker) callbackLoop(ctx context.Context) {
	f := b.fleet
	t := time.NewTicker(f.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.callbacks:
		case <-t.C:
		}
		cbs, err := b.db.TakeCallbacks(ctx, b.cfg.ID)
		if err != nil {
			if ctx.Err() == nil {
				b.log.Warn("read the devices to call back", "err", err)
			}
			continue
		}
		if len(cbs) > 0 {
			b.log.Info("calling back a dead broker's devices given to this broker", "devices", len(cbs))
			b.callBack(cbs)
		}
	}
}

// callBack queues, for the nudge loop's pace, a nudge to each device of cbs
// at the endpoint where its dead broker last heard it. The WireGuard peer
// here is pointed there first: it has never heard from a device that
// connected to another broker, so it would not know where to send the
// nudge.
func (b *Broker) callBack(cbs []postgres.Callback) {
	for _, c := range cbs {
		ep, err := netip.ParseAddrPort(c.Endpoint)
		if err != nil {
			continue
		}
		b.mu.Lock()
		p := b.byID[c.DeviceID]
		ok := p != nil && p.sess == nil
		if ok {
			// Known from now, as for a peer loaded with its presence
			// (upsert): the presence row its hello writes has it, so
			// should this broker die too, its sweep finds the device.
			p.endpoint = ep
		}
		b.mu.Unlock()
		if !ok {
			continue // not a peer here (gone since), or back already
		}
		if err := b.dev.SetPeer(wgnet.Peer{
			PublicKey:  p.key,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(p.dev.TunnelAddr, p.dev.TunnelAddr.BitLen())},
			Endpoint:   ep,
		}); err != nil {
			b.log.Warn("point a dead broker's device at its last endpoint", "device", p.dev.Name, "err", err)
			continue
		}
		b.queueNudge(p)
	}
}

// heldElsewhere reports whether another live broker of the fleet holds
// device id now: a nudge from here would pull it away from there (its
// WireGuard would follow this broker's handshake), so none is sent.
func (b *Broker) heldElsewhere(ctx context.Context, deviceID string) bool {
	if b.fleet == nil {
		return false
	}
	holder, _, held, err := b.db.HolderAddr(ctx, deviceID)
	return err == nil && held && holder != b.cfg.ID
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
