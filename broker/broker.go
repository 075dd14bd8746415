// Package broker is the live core of Fieldpass: one userspace WireGuard
// device with every active field device as a peer, one yamux session per
// connected device, and the streams opened through them.
//
// Devices are loaded from Postgres and kept in step with it through
// LISTEN/NOTIFY, so an operator command against the database (disable,
// decommission, enrol) takes effect here within a second. Liveness is read
// from the tunnel itself (bytes received, handshakes), never from an
// application heartbeat: devices pay for every byte on cellular links.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/metrics"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// Config configures a Broker. Zero values mean the defaults.
type Config struct {
	// ID names this broker in device presence (default: the host name).
	ID         string
	PrivateKey wgnet.Key
	// Prefix is the tunnel address space (default 10.77.0.0/16); the
	// broker takes its first host address.
	Prefix netip.Prefix
	// WGListen is the UDP address of WireGuard (default all addresses,
	// port 51820). A specific address binds only that address.
	WGListen netip.AddrPort
	// MTU of the tunnel (default 1280).
	MTU int
	// Window is the yamux stream window (default tunnel.DefaultWindow).
	Window uint32
	// PresenceInterval is how often tunnel stats are read (default 10 s:
	// liveness is judged on the scale of SilentAfter keepalives, and each
	// read walks every peer).
	PresenceInterval time.Duration
	// SilentAfter is how many keepalive intervals without a received byte
	// mark a device offline (default 3).
	SilentAfter int
	// ResetAfter is how long a peer must be silent before its handshake
	// state is reset (default 3 min, WireGuard's reject-after time, past
	// which no session key is left to lose). It lets a device whose clock
	// went backwards (reboot without RTC) handshake again.
	ResetAfter time.Duration
	// HelloTimeout bounds a connector's hello (default 10 s).
	HelloTimeout time.Duration
	// BarredFor is how long after its decommissioning a device's key is
	// kept as a barred peer, whose connector is told at its hello that it
	// was decommissioned (default 30 days); disabled devices are barred
	// for as long as they are disabled. See barredPeer.
	BarredFor time.Duration
	// NudgeRate is the pace of broker-initiated nudges per second
	// (default 50), so a restarted broker does not call its whole fleet
	// back at once. A larger queue is called back faster, at the pace that
	// clears it within nudgeWithin (a 10,000-device fleet: about 220 a
	// second), never more than nudgeMaxRate.
	NudgeRate int
	// Metrics receives devices online, handshakes and Postgres errors
	// (default nil: none recorded).
	Metrics *metrics.Broker
	// Alerts receives device_offline, endpoint_changed and
	// clone_suspected alerts (default nil: alerts off).
	Alerts *alerts.Notifier
	// OfflineAlertAfter is how long a device that had a session here must
	// stay offline before a device_offline alert, once per offline episode
	// (default 10 min). A device already offline when the broker starts is
	// alerted this long after the start (armOfflineAtStart).
	OfflineAlertAfter time.Duration
	Logger            *slog.Logger
	Now               func() time.Time
	// NewNetwork builds the WireGuard side (default: a userspace wgnet
	// device). It exists for a TUN mode and for tests.
	NewNetwork func(wgnet.Config) (Network, error)
	// Fleet, when set, makes the broker one of several sharing its
	// database (fleet.go); nil: it works alone.
	Fleet *FleetConfig
	// Endpoints are the broker's public UDP addresses (host:port) told to
	// devices that enrol inside the tunnel (enrollpeers.go); none: their
	// connectors keep the endpoint they enrolled through.
	Endpoints []string
}

func (c *Config) setDefaults() error {
	if c.ID == "" {
		h, err := os.Hostname()
		if err != nil {
			h = "broker"
		}
		c.ID = h
	}
	if c.PrivateKey.IsZero() {
		return errors.New("broker: no private key")
	}
	if !c.Prefix.IsValid() {
		c.Prefix = netip.MustParsePrefix("10.77.0.0/16")
	}
	if !c.WGListen.IsValid() {
		c.WGListen = netip.AddrPortFrom(netip.Addr{}, 51820)
	}
	if c.MTU == 0 {
		c.MTU = tunnel.DefaultMTU
	}
	if c.PresenceInterval == 0 {
		c.PresenceInterval = 10 * time.Second
	}
	if c.SilentAfter == 0 {
		c.SilentAfter = 3
	}
	if c.ResetAfter == 0 {
		c.ResetAfter = 3 * time.Minute
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = 10 * time.Second
	}
	if c.NudgeRate == 0 {
		c.NudgeRate = 50
	}
	if c.BarredFor == 0 {
		c.BarredFor = 30 * 24 * time.Hour
	}
	if c.OfflineAlertAfter == 0 {
		c.OfflineAlertAfter = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.NewNetwork == nil {
		c.NewNetwork = func(wc wgnet.Config) (Network, error) { return wgnet.New(wc) }
	}
	return nil
}

// Broker is the running hub.
type Broker struct {
	cfg     Config
	db      *postgres.DB
	log     *slog.Logger
	dev     Network
	addr    netip.Addr
	ln      net.Listener
	nudgeCh chan *peer
	kick    chan struct{} // asks presenceLoop for a pass now
	history *historyWriter
	fleet   *fleet // nil: this broker works alone (fleet.go)
	// ycfg is every device session's yamux configuration, one shared by
	// all (yamux only reads it): a copy per session was kept by each.
	ycfg *yamux.Config
	// peerStats is the presence loop's last read of the peers, reused by
	// the next (only that loop touches it).
	peerStats []wgnet.PeerStats

	mu     sync.Mutex // guards the maps and every peer's mutable fields
	byAddr map[netip.Addr]*peer
	byID   map[string]*peer
	byName map[string]*peer
	byKey  map[wgnet.Key]*peer
	// barred are the devices told at their hello that they may not
	// connect, by tunnel address (barred.go).
	barred map[netip.Addr]*barredPeer
	// enroll holds the enrolment tokens admitted as peers (enrollpeers.go).
	enroll enrollState
	closed bool
}

// flushDelay is how long closing sessions get to reach their connectors
// before their way out is removed.
const flushDelay = 200 * time.Millisecond

// peer is one active device: a WireGuard peer, maybe with a live session.
type peer struct {
	dev  fieldpass.Device
	key  wgnet.Key
	sess *yamux.Session
	// keepalive is the device's WireGuard keepalive as far as liveness is
	// judged: what the connector acknowledged, else the longer of its
	// hello's and the operators' setting (dev.KeepaliveSeconds), since a
	// connector too old for settings keeps its own.
	keepalive time.Duration
	// helloKeepalive is the connector's own keepalive, from its hello.
	helloKeepalive time.Duration
	// ctlMu serialises control streams to the device, so settings reach it
	// in order; ctlSeq numbers them, so only the newest answer counts.
	ctlMu   sync.Mutex
	ctlSeq  uint64
	version string

	rxBytes  uint64
	lastRx   time.Time // last time rx bytes grew (or the hello)
	endpoint netip.AddrPort
	// endpointSaved: the current session's presence row has the endpoint.
	endpointSaved bool
	resetAt       time.Time // handshake state last reset
	nudgedAt      time.Time
	lastTouch     time.Time // last_seen last written
	hist          peerHistory

	// talkingSince: the first presence pass that saw the peer talk
	// without a session (zero while it has one or is silent).
	talkingSince time.Time

	// presenceMu serialises writePresence for this peer, so that rows
	// reach Postgres in the order they were read: a hello's row, read
	// before the presence loop learned the endpoint, must not land after
	// (and erase) the row that saved it.
	presenceMu sync.Mutex
}

// New brings up the WireGuard device and loads the active devices as peers.
// Call Serve to accept connectors.
func New(ctx context.Context, cfg Config, db *postgres.DB) (*Broker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:     cfg,
		db:      db,
		log:     cfg.Logger,
		addr:    fieldpass.BrokerTunnelAddress(cfg.Prefix),
		nudgeCh: make(chan *peer, nudgeQueue),
		kick:    make(chan struct{}, 1),
		byAddr:  map[netip.Addr]*peer{},
		byID:    map[string]*peer{},
		byName:  map[string]*peer{},
		byKey:   map[wgnet.Key]*peer{},
		barred:  map[netip.Addr]*barredPeer{},
		enroll:  enrollState{byAddr: map[netip.Addr]*enrollPeer{}},
	}
	b.ycfg = tunnel.YamuxConfig(cfg.Window)
	// No timer goroutine per stream opened: openStream bounds the wait
	// for the connector's answer itself, and a dead tunnel is told from
	// WireGuard's counters, not from one unacknowledged open.
	b.ycfg.StreamOpenTimeout = 0
	listen := cfg.WGListen
	if listen.Addr().IsUnspecified() {
		listen = netip.AddrPortFrom(netip.Addr{}, listen.Port())
	}
	dev, err := cfg.NewNetwork(wgnet.Config{
		PrivateKey: cfg.PrivateKey,
		Address:    b.addr,
		MTU:        cfg.MTU,
		ListenAddr: listen,
		Logger:     cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("start wireguard on %s: %w", cfg.WGListen, err)
	}
	b.dev = dev
	if cfg.Fleet != nil {
		b.startFleet(*cfg.Fleet)
	}
	ln, err := dev.ListenTCP(tunnel.BrokerPort)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("listen in tunnel: %w", err)
	}
	b.ln = ln
	b.startHistory()
	// Load first: devices shown online were held by our previous run and
	// are nudged to come back; then clear that stale presence.
	if err := b.reload(ctx); err != nil {
		b.Close()
		return nil, err
	}
	if cfg.Alerts != nil {
		b.armOfflineAtStart(ctx)
	}
	if err := b.db.MarkBrokerOffline(ctx, cfg.ID); err != nil {
		b.Close()
		return nil, fmt.Errorf("reset presence: %w", err)
	}
	return b, nil
}

// PublicKey is the broker's WireGuard public key.
func (b *Broker) PublicKey() wgnet.Key { return b.cfg.PrivateKey.Public() }

// Address is the broker's tunnel address.
func (b *Broker) Address() netip.Addr { return b.addr }

// ListenPort is the actual WireGuard UDP port.
func (b *Broker) ListenPort() uint16 { return b.dev.ListenPort() }

// MTU is the tunnel MTU devices are told to use.
func (b *Broker) MTU() int { return b.cfg.MTU }

// Prefix is the tunnel address space.
func (b *Broker) Prefix() netip.Prefix { return b.cfg.Prefix }

// ID names this broker (Config.ID): in device presence and on the rows of
// the sessions it carries.
func (b *Broker) ID() string { return b.cfg.ID }

// tunnelOf is the one way the session manager (Sessions) reaches into the
// broker: the device named name as the broker holds it (a copy; its Labels
// map is replaced on change, never written, so it may be shared) and its
// live yamux session. ok is false when the device is no peer here (not
// enrolled, not active, or unknown); ys is nil while it is a peer that is
// not connected.
func (b *Broker) tunnelOf(name string) (dev *fieldpass.Device, ys *yamux.Session, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.byName[name]
	if p == nil {
		return nil, nil, false
	}
	d := p.dev
	if p.sess != nil && !b.serves(p.dev.ID) {
		// With a fleet: connected here, but not ours to serve (yet,
		// or any more: fleet.go).
		return &d, nil, true
	}
	return &d, p.sess, true
}

// Ready reports why the broker cannot serve, as a short reason fit to show
// a prober, or nil: Postgres must answer within ctx and the WireGuard device
// must be open. It is cheap enough for a probe every few seconds: one round
// trip to Postgres.
func (b *Broker) Ready(ctx context.Context) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed || b.dev.ListenPort() == 0 {
		return errors.New("wireguard is down")
	}
	if err := b.db.Ping(ctx); err != nil {
		// The reason goes to whoever probes, maybe on the public
		// listener: the detail (host, role, database) stays in the log.
		b.log.Debug("readiness: postgres unreachable", "err", err)
		return errors.New("postgres unreachable")
	}
	if b.fleet != nil {
		if err := b.db.LeasesReady(ctx); err != nil {
			b.log.Debug("readiness: no lease tables", "err", err)
			return errors.New("database not migrated for several brokers")
		}
	}
	return nil
}

// Serve runs the broker until ctx ends: it accepts connectors, follows
// device changes in Postgres and reads presence from the tunnel.
func (b *Broker) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(6)
	go func() {
		defer wg.Done()
		b.db.ListenDevices(ctx, func(id string) { b.deviceChanged(ctx, id) })
	}()
	go func() { defer wg.Done(); b.enrollPeersLoop(ctx) }()
	go func() { defer wg.Done(); b.runFleet(ctx) }()
	go func() { defer wg.Done(); b.presenceLoop(ctx) }()
	go func() { defer wg.Done(); b.nudgeLoop(ctx) }()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		b.ln.Close()
	}()
	err := b.acceptLoop(ctx)
	cancel()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Close ends every session, marks this broker's devices offline and stops
// WireGuard.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	var sessions []*yamux.Session
	for _, p := range b.byID {
		if p.sess != nil {
			sessions = append(sessions, p.sess)
			p.hist.offlineReason = "broker shutdown"
		}
		if p.hist.offlineTimer != nil {
			p.hist.offlineTimer.Stop()
			p.hist.offlineTimer = nil
		}
	}
	b.mu.Unlock()
	for _, s := range sessions {
		s.Close()
	}
	if len(sessions) > 0 {
		time.Sleep(flushDelay) // FINs out before WireGuard stops
	}
	b.stopHistory()
	b.ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.db.MarkBrokerOffline(ctx, b.cfg.ID); err != nil {
		b.log.Warn("mark devices offline at shutdown", "err", err)
	}
	return b.dev.Close()
}

// reload makes the peer set equal to the active devices in Postgres. It runs
// at start and after the notification connection was lost (notifications
// may have been missed).
func (b *Broker) reload(ctx context.Context) error {
	devs, err := b.db.PeerDevices(ctx)
	if err != nil {
		return fmt.Errorf("load devices: %w", err)
	}
	seen := make(map[string]bool, len(devs))
	for _, d := range devs {
		seen[d.ID] = true
		if err := b.upsert(d); err != nil {
			b.log.Warn("add peer", "device", d.Name, "err", err)
		}
	}
	b.mu.Lock()
	var gone []*peer
	for id, p := range b.byID {
		if !seen[id] {
			gone = append(gone, p)
		}
	}
	b.mu.Unlock()
	for _, p := range gone {
		b.remove(p, "device no longer active")
	}
	if err := b.reloadBarred(ctx); err != nil {
		return err
	}
	b.log.Info("peers loaded", "devices", len(devs))
	return nil
}

// deviceChanged follows one notification: id "" means reload everything.
func (b *Broker) deviceChanged(ctx context.Context, id string) {
	if id == "" {
		if err := b.reload(ctx); err != nil {
			b.log.Warn("reload devices", "err", err)
		}
		return
	}
	d, err := b.db.DeviceByID(ctx, id)
	if fieldpass.ErrorCode(err) == fieldpass.ENOTFOUND {
		d = nil
	} else if err != nil {
		b.log.Warn("load changed device", "id", id, "err", err)
		return
	}
	b.mu.Lock()
	old := b.byID[id]
	b.mu.Unlock()
	was := b.takeBarred(id)
	if d == nil || d.State != fieldpass.DeviceActive || d.PublicKey == "" {
		if old != nil {
			reason := "device removed"
			if d != nil {
				reason = "device " + string(d.State)
			}
			bd, err := b.db.BarredDevice(ctx, id, b.barredSince())
			if err != nil {
				b.log.Warn("load barred device", "id", id, "err", err)
			}
			if bd != nil && bd.PublicKey == old.dev.PublicKey && bd.TunnelAddr == old.dev.TunnelAddr {
				b.removeOrBar(old, reason, bd)
				return
			}
			b.remove(old, reason)
		}
		b.barredChanged(ctx, id, was)
		return
	}
	if old != nil && old.dev.PublicKey != d.PublicKey {
		b.remove(old, "device key changed")
	}
	if was != nil && was.dev.PublicKey == d.PublicKey {
		// Enabled again: its connector, told it was disabled, waits
		// long between calls. Nudge it where WireGuard last heard it.
		if ep := b.liveEndpoint(was.key); ep.IsValid() {
			d.Presence.Endpoint = ep.String()
		}
	} else if was != nil {
		b.dropBarred(was)
		was = nil
	}
	if err := b.upsert(d); err != nil {
		b.log.Warn("add peer", "device", d.Name, "err", err)
		return
	}
	if was != nil {
		b.mu.Lock()
		p := b.byID[id]
		b.mu.Unlock()
		if p != nil && p.endpoint.IsValid() {
			b.log.Info("device enabled again; calling it back", "device", d.Name)
			b.queueNudge(p)
		}
	}
}

// upsert adds d as a WireGuard peer, or refreshes its record if present.
func (b *Broker) upsert(d *fieldpass.Device) error {
	key, err := wgnet.ParseKey(d.PublicKey)
	if err != nil {
		return fmt.Errorf("device %s has a bad key: %w", d.Name, err)
	}
	b.mu.Lock()
	if p, ok := b.byID[d.ID]; ok {
		if p.dev.Name != d.Name { // renamed: keep byName in step
			if b.byName[p.dev.Name] == p {
				delete(b.byName, p.dev.Name)
			}
			b.byName[d.Name] = p
		}
		p.dev.Labels, p.dev.Name = d.Labels, d.Name
		changed := p.dev.KeepaliveSeconds != d.KeepaliveSeconds
		p.dev.KeepaliveSeconds = d.KeepaliveSeconds
		live := p.sess != nil
		b.mu.Unlock()
		if changed && live {
			go b.sendKeepalive(p)
		}
		return nil
	}
	b.mu.Unlock()
	wp := wgnet.Peer{
		PublicKey:  key,
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(d.TunnelAddr, d.TunnelAddr.BitLen())},
	}
	// The last endpoint seen lets the broker reach the device first (a
	// nudge after a restart) while its NAT mapping is still open.
	if ep, err := netip.ParseAddrPort(d.Presence.Endpoint); err == nil {
		wp.Endpoint = ep
	}
	if err := b.dev.SetPeer(wp); err != nil {
		return err
	}
	// A peer just added has fresh handshake state: counts as reset.
	p := &peer{dev: *d, key: key, keepalive: tunnel.DefaultKeepalive, endpoint: wp.Endpoint, resetAt: b.cfg.Now()}
	b.mu.Lock()
	b.byID[d.ID], b.byAddr[d.TunnelAddr], b.byName[d.Name], b.byKey[key] = p, p, p, p
	b.mu.Unlock()
	if d.Presence.Online && wp.Endpoint.IsValid() {
		b.queueNudge(p)
	}
	return nil
}

// remove closes p's session (and so its streams) and drops the peer.
func (b *Broker) remove(p *peer, reason string) { b.removeOrBar(p, reason, nil) }

// removeOrBar is remove, but with barred not nil (p's device, now disabled
// or decommissioned, with p's key) the WireGuard peer stays, as a barred
// peer from the same instant: the connector's next hello, however soon, is
// told why rather than left to time out.
func (b *Broker) removeOrBar(p *peer, reason string, barred *fieldpass.Device) {
	b.mu.Lock()
	sess := p.sess
	p.sess = nil
	if barred != nil {
		b.barred[barred.TunnelAddr] = &barredPeer{dev: *barred, key: p.key}
	}
	delete(b.byID, p.dev.ID)
	if b.byAddr[p.dev.TunnelAddr] == p {
		delete(b.byAddr, p.dev.TunnelAddr)
	}
	if b.byName[p.dev.Name] == p {
		delete(b.byName, p.dev.Name)
	}
	if b.byKey[p.key] == p {
		delete(b.byKey, p.key)
	}
	b.mu.Unlock()
	if sess != nil {
		sess.Close()
		// Let the FIN reach the connector before the peer (and with it
		// the way to the device) is gone, so it knows to stop at once
		// instead of finding out from tunnel silence minutes later.
		time.Sleep(flushDelay)
	}
	if barred == nil {
		if err := b.dev.RemovePeer(p.key); err != nil {
			b.log.Warn("remove peer", "device", p.dev.Name, "err", err)
		}
	}
	b.log.Info("device removed from tunnel", "device", p.dev.Name, "reason", reason, "barred", barred != nil)
	if sess != nil {
		b.deviceDown(p)
		b.recordOffline(p, reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pr := fieldpass.Presence{Online: false, LastSeen: p.lastRx, ConnectorVersion: p.version, BrokerID: b.cfg.ID}
	if p.endpoint.IsValid() {
		pr.Endpoint = p.endpoint.String()
	}
	if err := b.db.UpdatePresence(ctx, p.dev.ID, pr); err != nil {
		b.cfg.Metrics.PostgresError()
		b.log.Warn("write presence", "device", p.dev.Name, "err", err)
	}
}
