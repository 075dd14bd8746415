// Package connector is the device agent: it enrols, brings up userspace
// WireGuard, dials out to the broker, keeps the tunnel up across cellular
// loss, IP changes and broker restarts, and serves the broker's streams to
// the device's allowlisted local services.
//
// It is small on purpose: its import graph holds no database, no HTTP server,
// no API client and no OIDC (cmd/fieldpass-connector's TestDeps holds it to
// that), and it opens no TCP listener and no UDP socket but
// WireGuard's own (on Linux it also listens on an rtnetlink socket for the
// kernel's news of address changes). It dials only the targets of its own
// service list, by name; it never dials an address it was sent.
package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// Config configures a Connector. Zero values mean the defaults.
type Config struct {
	State *State
	// Services maps service names to local targets (host:port). Only these
	// are ever dialled.
	Services map[string]string
	// Keepalive is WireGuard's persistent keepalive (default 25 s): the
	// only periodic traffic of an idle device. Longer saves data on metered
	// SIMs but risks carrier NAT mappings timing out. A keepalive operators
	// set for the device on the broker (fieldpass-broker device keepalive)
	// overrides it from the hello on, and follows their changes live.
	Keepalive time.Duration
	// MTU of the tunnel; default is the broker's, else 1280.
	MTU int
	// ListenAddr is the local UDP address (default: all addresses, random
	// port). Tests use 127.0.0.1:0.
	ListenAddr netip.AddrPort
	// MinBackoff and MaxBackoff bound the reconnect delay (default 1 s and
	// 5 min). Delays grow exponentially with full jitter, so a fleet that
	// lost its broker does not come back in lockstep.
	MinBackoff, MaxBackoff time.Duration
	// DisabledBackoff is the wait after the broker said this device is
	// disabled or decommissioned (default 30 min): only an operator can
	// change that, and a fleet of such devices should not keep calling.
	DisabledBackoff time.Duration
	// DialTimeout bounds one attempt to reach the broker inside the tunnel
	// (default 20 s: WireGuard retries its handshake every 5 s). A broker's
	// call back (nudge) cuts an attempt short.
	DialTimeout time.Duration
	// NetworkPoll is how often local addresses are checked for a change
	// that calls for an immediate rebind. On Linux the kernel reports
	// changes as they happen (rtnetlink) and the poll is only a safety net
	// (default 30 s); where it cannot, the poll is how changes are seen
	// (default 5 s). Negative disables both.
	NetworkPoll time.Duration
	// Window is the yamux stream window (default tunnel.DefaultWindow).
	Window uint32
	Logger *slog.Logger
}

// Connector is a running device agent.
type Connector struct {
	cfg    Config
	log    *slog.Logger
	dev    *wgnet.Device
	broker netip.AddrPort
	// brokerKey is State.BrokerKey parsed once (LoadState validated it).
	brokerKey wgnet.Key
	nudge     chan struct{}
	retry     bool // a session was attempted before; used by Run's goroutine only
	// oldBroker: the broker refused a version 2 hello, so hellos are sent
	// as version 1, without the service names, until that session ends
	// (Run's goroutine only).
	oldBroker bool
	// disabledSaid: the broker's "disabled" was logged since the last
	// session, so a device that stays disabled says it once (Run's
	// goroutine only).
	disabledSaid bool
	// services are the names of cfg.Services, sorted, for the hello.
	services []string

	// streamsMu guards streams: the session streams being served, by
	// yamux id, so a Reset from the broker can drop one.
	streamsMu sync.Mutex
	streams   map[uint32]*served

	mu        sync.Mutex
	session   *yamux.Session
	connected bool
	endpoint  int // index into State.Endpoints in use
	// keepalive is the broker peer's persistent keepalive in effect: the
	// broker's setting for this device if it sent one, else cfg.Keepalive.
	keepalive time.Duration
}

// New validates cfg and brings up the WireGuard device. Nothing is sent
// until Run.
func New(cfg Config) (*Connector, error) {
	if cfg.State == nil {
		return nil, errors.New("connector: no state")
	}
	if len(cfg.Services) == 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "no services: give at least one --service NAME=HOST:PORT")
	}
	if len(cfg.Services) > tunnel.MaxServices {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "%d services: at most %d", len(cfg.Services), tunnel.MaxServices)
	}
	for name, target := range cfg.Services {
		if err := fieldpass.ValidateServiceName(name); err != nil {
			return nil, err
		}
		if err := ValidateTarget(name, target); err != nil {
			return nil, err
		}
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = tunnel.DefaultKeepalive
	}
	if cfg.Keepalive < time.Second || cfg.Keepalive > 65535*time.Second {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "keepalive %s out of range (1s to 18h)", cfg.Keepalive)
	}
	if cfg.MTU == 0 {
		cfg.MTU = cfg.State.MTU
	}
	if cfg.MTU == 0 {
		cfg.MTU = tunnel.DefaultMTU
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.DisabledBackoff == 0 {
		cfg.DisabledBackoff = 30 * time.Minute
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	brokerKey, err := wgnet.ParseKey(cfg.State.BrokerKey)
	if err != nil {
		return nil, fmt.Errorf("broker key: %w", err)
	}
	c := &Connector{
		brokerKey: brokerKey,
		cfg:       cfg,
		log:       cfg.Logger,
		broker:    netip.AddrPortFrom(cfg.State.BrokerAddress, cfg.State.BrokerPort),
		nudge:     make(chan struct{}, 1),
		keepalive: cfg.Keepalive,
		services:  slices.Sorted(maps.Keys(cfg.Services)),
		streams:   map[uint32]*served{},
	}
	dev, err := wgnet.New(wgnet.Config{
		PrivateKey: cfg.State.PrivateKey,
		Address:    cfg.State.TunnelAddress,
		MTU:        cfg.MTU,
		ListenAddr: cfg.ListenAddr,
		Logger:     cfg.Logger,
		NudgePort:  tunnel.NudgePort,
		OnNudge: func() {
			c.log.Debug("nudged: a broker asks this device to call it")
			select {
			case c.nudge <- struct{}{}:
			default:
			}
		},
		SmallDevice: true, // a router, not a server: wgnet's small buffers and batches
	})
	if err != nil {
		return nil, fmt.Errorf("start wireguard: %w", err)
	}
	c.dev = dev
	if err := c.setBrokerPeer(0); err != nil {
		dev.Close()
		return nil, err
	}
	return c, nil
}

// setBrokerPeer points the broker peer at State.Endpoints[i]. Host names are
// resolved at each use, so a broker that moves keeps its devices.
func (c *Connector) setBrokerPeer(i int) error {
	eps := c.cfg.State.Endpoints
	i %= len(eps)
	ep, err := resolveEndpoint(eps[i])
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.endpoint = i
	keepalive := c.keepalive
	c.mu.Unlock()
	return c.dev.SetPeer(wgnet.Peer{
		PublicKey:           c.brokerKey,
		AllowedIPs:          []netip.Prefix{netip.PrefixFrom(c.cfg.State.BrokerAddress, c.cfg.State.BrokerAddress.BitLen())},
		Endpoint:            ep,
		PersistentKeepalive: keepalive,
	})
}

// Keepalive is the broker peer's persistent keepalive in effect.
func (c *Connector) Keepalive() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keepalive
}

// applyKeepalive puts the broker's setting for this device into effect (0:
// none, the connector's own applies) and returns what is now in effect.
// The setting comes from the broker's hello reply or a control stream,
// inside the tunnel; its encoding (1 to 65535 s) keeps it within the
// flag's own range.
func (c *Connector) applyKeepalive(seconds uint16, how string) (time.Duration, error) {
	want, source := c.cfg.Keepalive, "connector"
	if seconds > 0 {
		want, source = time.Duration(seconds)*time.Second, "broker"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if want != c.keepalive {
		if err := c.dev.SetPersistentKeepalive(c.brokerKey, want); err != nil {
			return c.keepalive, err
		}
		c.keepalive = want
	}
	c.log.Info("wireguard keepalive", "keepalive", want, "source", source, "from", how)
	return want, nil
}

func resolveEndpoint(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("broker endpoint %q: %w", s, err)
	}
	ua, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolve broker endpoint %q: %w", s, err)
	}
	return ua.AddrPort(), nil
}

// Device exposes the WireGuard device (tests read its sockets and stats).
func (c *Connector) Device() *wgnet.Device { return c.dev }

// Connected reports whether a broker session is up.
func (c *Connector) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// Close tears the tunnel down. Run must have returned.
func (c *Connector) Close() error { return c.dev.Close() }

// Rebind re-opens the UDP socket and tells the broker at once, as after a
// change of the device's network (new cellular IP, new NAT mapping).
func (c *Connector) Rebind() error { return c.dev.Rebind() }

// Run keeps a session with the broker until ctx ends, reconnecting with
// capped exponential backoff and full jitter for as long as it takes: a
// device nobody can visit must never give up.
func (c *Connector) Run(ctx context.Context) error {
	if c.cfg.NetworkPoll >= 0 {
		w := newNetWatcher(c.cfg.NetworkPoll, c.log)
		var wg sync.WaitGroup
		defer wg.Wait() // no rebind once Run has returned: Close may follow
		wg.Go(func() { w.run(ctx, c.networkChanged) })
	}
	attempt := 0
	for {
		started := time.Now()
		err := c.session1(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errNudged) {
			// Not a failure: a broker is calling now. Straight back to it,
			// with no backoff and no switch of endpoint (the nudge's
			// handshake moved the peer to the caller). Nudges come at the
			// brokers' pace and at most one a second (wgnet), so this is
			// no storm.
			continue
		}
		// A session that lasted resets the backoff: the next failure is
		// a new outage, not the same one.
		if time.Since(started) > time.Minute {
			attempt = 0
		}
		delay := backoff(c.cfg.MinBackoff, c.cfg.MaxBackoff, attempt)
		attempt++
		var disabled *disabledError
		var unavailable *unavailableError
		switch {
		case errors.As(err, &disabled):
			// Only an operator can change that: call again rarely, and
			// say it once, not at every call. The broker nudges the
			// device when it is enabled again, which ends the wait.
			delay = c.cfg.DisabledBackoff
			level := slog.LevelDebug
			if !c.disabledSaid {
				level, c.disabledSaid = slog.LevelError, true
			}
			c.log.Log(ctx, level, "the broker refuses this device: an operator must enable it (fieldpass-broker device enable NAME) or, if it was decommissioned, enrol it again with a new token; asking again only rarely",
				"device", c.cfg.State.DeviceName, "broker_says", disabled.reason, "retry_in", delay)
		case errors.As(err, &unavailable):
			c.log.Warn("this broker cannot serve the device now: trying the next one", "broker_says", unavailable.reason, "retry_in", delay.Round(time.Millisecond))
		case errors.Is(err, errTunnelDial) && attempt >= 3:
			// Say what a person can check, not only the dial's own words.
			c.log.Warn("the broker does not answer through the tunnel: UDP to its endpoint may be blocked, or the device was disabled or decommissioned on the broker (fieldpass-broker device list)",
				"err", err, "retry_in", delay.Round(time.Millisecond), "attempt", attempt)
		default:
			c.log.Warn("broker session ended", "err", err, "retry_in", delay.Round(time.Millisecond), "attempt", attempt)
		}
		if (attempt > 1 || unavailable != nil) && len(c.cfg.State.Endpoints) > 1 {
			c.mu.Lock()
			next := c.endpoint + 1
			c.mu.Unlock()
			if err := c.setBrokerPeer(next); err != nil {
				c.log.Warn("switch broker endpoint", "err", err)
			}
		}
		// A nudge already waiting came before any switch just made.
		pending := len(c.nudge) > 0
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		case <-c.nudge:
			// The broker asked us to come back: it is there now. Its
			// nudge came through a fresh handshake, which moved the peer
			// to it; a reset would throw that away, and with it our
			// refusal of the nudge's SYN, which the broker then sends
			// again a second later, ending the session just made. Unless
			// the nudge predates a switch of endpoint.
			c.retry = pending
		}
	}
}

// backoff returns a delay drawn uniformly from [0, min(max, base*2^attempt)]
// ("full jitter"), but never below base/2 so a broken broker is not hammered.
func backoff(base, max time.Duration, attempt int) time.Duration {
	ceil := base
	for i := 0; i < attempt && ceil < max; i++ {
		ceil *= 2
	}
	if ceil > max {
		ceil = max
	}
	d := time.Duration(rand.Int64N(int64(ceil) + 1))
	if d < base/2 {
		d = base / 2
	}
	return d
}

// session1 runs one broker session: dial inside the tunnel, hello, yamux,
// serve streams until the session dies, the tunnel goes silent or the broker
// nudges.
func (c *Connector) session1(ctx context.Context) error {
	// Drain a stale nudge: it was for the session before this one.
	select {
	case <-c.nudge:
	default:
	}
	if c.retry {
		// Start from a fresh WireGuard handshake: if the broker restarted,
		// it no longer knows our session keys and would drop everything we
		// send until WireGuard's own 15 s no-reply timer fired.
		if err := c.dev.ResetPeer(c.brokerKey, true); err != nil {
			c.log.Warn("reset broker peer", "err", err)
		}
	}
	c.retry = true
	// A nudge while this attempt is under way is a broker calling now,
	// through a fresh handshake that moved the peer's endpoint to it, while
	// the broker being dialled may be gone. So the nudge cuts the dial
	// short (the hello's wait to helloGrace) and Run dials the caller at
	// once; an attempt that succeeds all the same has done what the nudge
	// asked, which is dropped. Left pending, as it once was, the nudge
	// ended the session it had just let through (the caller's handshake
	// lets a waiting dial through), and a backoff grown over the failed
	// attempts followed.
	actx, abort := context.WithCancel(ctx)
	defer abort()
	stopWatch := c.abortOnNudge(abort)
	conn, reply, err := c.dialHello(actx)
	if nudged := stopWatch(); nudged && err != nil && ctx.Err() == nil {
		c.log.Info("a broker called while this device was dialling: calling it at once", "attempt_was", err)
		c.retry = false // keep the caller's fresh handshake
		return errNudged
	}
	if err != nil {
		return err
	}
	if reply.Code == tunnel.HelloDisabled {
		conn.Close()
		return &disabledError{reason: reply.Reason}
	}
	if reply.Code == tunnel.HelloVersion && !c.oldBroker {
		// A broker before service announcements refuses a version 2
		// hello; speak version 1 to it from now on, and at once.
		conn.Close()
		c.oldBroker = true
		c.log.Info("the broker predates service announcements: saying hello without them", "broker_says", reply.Reason)
		c.retry = false // the broker just answered: no handshake to reset
		return c.session1(ctx)
	}
	if reply.Code == tunnel.HelloUnavailable {
		conn.Close()
		return &unavailableError{reason: reply.Reason}
	}
	if reply.Code != tunnel.HelloOK {
		conn.Close()
		return fmt.Errorf("broker refused hello: %s: %s", reply.Code, reply.Reason)
	}
	// Every session starts from what the broker says now: a setting
	// cleared while this device was away reverts to the flag.
	if _, err := c.applyKeepalive(reply.KeepaliveSeconds, "hello"); err != nil {
		c.log.Warn("apply keepalive", "err", err)
	}
	conn.SetDeadline(time.Time{})
	// One write per small frame, and a stream's acceptance goes with its
	// answer (status) when the service's dial is quick: fewer packets
	// through WireGuard.
	sess, err := yamux.Server(tunnel.CoalesceFrames(conn, tunnel.OpenHold), tunnel.YamuxConfig(c.cfg.Window))
	if err != nil {
		conn.Close()
		return fmt.Errorf("yamux: %w", err)
	}
	c.mu.Lock()
	c.session, c.connected = sess, true
	c.mu.Unlock()
	c.disabledSaid = false
	c.log.Info("connected to broker", "device", c.cfg.State.DeviceName, "broker", c.broker)
	defer func() {
		c.mu.Lock()
		c.session, c.connected = nil, false
		c.mu.Unlock()
		sess.Close()
		// The broker may come back upgraded (a restart ends sessions):
		// offer the service names again.
		c.oldBroker = false
	}()

	done := make(chan error, 1)
	go func() { done <- c.accept(sess) }()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			c.goodbye(sess, conn)
			return ctx.Err()
		case err := <-done:
			return fmt.Errorf("session closed: %w", err)
		case <-c.nudge:
			return errors.New("broker nudged: it lost our connection (restart?)")
		case <-tick.C:
			if err := c.checkTunnel(); err != nil {
				return err
			}
		}
	}
}

// helloGrace is how long a hello already sent may still take once a broker
// has called. The connection may well be to the caller itself (the call's
// handshake lets through a dial that was waiting for it), and a hello cut
// short there leaves that broker a second hello from the same device to
// sort out; one to a broker that has gone fails sooner, reset by the
// caller, to which the call moved the peer.
const helloGrace = 2 * time.Second

// dialHello dials the broker inside the tunnel and says hello, each within
// DialTimeout. The end of ctx cuts the dial short, and the hello's wait to
// helloGrace. On success the caller owns conn, whose deadline is still set.
func (c *Connector) dialHello(ctx context.Context) (net.Conn, tunnel.HelloReply, error) {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	conn, err := c.dev.DialTCP(dctx, c.broker)
	cancel()
	if err != nil {
		return nil, tunnel.HelloReply{}, fmt.Errorf("dial broker %s in tunnel: %w: %w", c.broker, errTunnelDial, err)
	}
	conn.SetDeadline(time.Now().Add(c.cfg.DialTimeout))
	var (
		mu   sync.Mutex
		done bool // the hello is over: its caller owns the deadline
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			conn.SetDeadline(time.Now().Add(helloGrace))
		}
	})
	defer stop()
	id, _ := tunnel.ParseID(c.cfg.State.DeviceID)
	hello := tunnel.Hello{
		DeviceID:         id,
		ConnectorVersion: fieldpass.Version,
		KeepaliveSeconds: uint16(c.cfg.Keepalive / time.Second),
		Services:         c.services,
	}
	if c.oldBroker {
		hello.Services = nil
	}
	err = tunnel.WriteHello(conn, hello)
	var reply tunnel.HelloReply
	if err == nil {
		reply, err = tunnel.ReadHelloReply(conn)
	}
	mu.Lock()
	done = true
	mu.Unlock()
	if err != nil {
		conn.Close()
		return nil, tunnel.HelloReply{}, fmt.Errorf("hello: %w", err)
	}
	return conn, reply, nil
}

// abortOnNudge calls abort if a nudge arrives before the returned stop is
// called; stop reports whether it did. A nudge that comes once the attempt
// has succeeded is dropped: it asked for what has just happened.
func (c *Connector) abortOnNudge(abort func()) (stop func() bool) {
	quit := make(chan struct{})
	nudged := make(chan bool, 1)
	go func() {
		select {
		case <-c.nudge:
			abort()
			nudged <- true
		case <-quit:
			nudged <- false
		}
	}()
	return func() bool {
		close(quit)
		return <-nudged
	}
}

// ValidateTarget checks a service's target at start, so that a typo stops
// the connector where its operator sees it, not when someone connects.
// Host names are resolved only when dialled: DNS may not be up yet.
func ValidateTarget(name, target string) error {
	host, port, err := net.SplitHostPort(target)
	if err != nil || host == "" {
		return fieldpass.Errorf(fieldpass.EINVALID, "service %s: invalid target %q: want HOST:PORT, such as 127.0.0.1:22", name, target)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fieldpass.Errorf(fieldpass.EINVALID, "service %s: invalid port %q in %q: want a number from 1 to 65535", name, port, target)
	}
	return nil
}

var (
	// errTunnelDial: the broker did not take a TCP connection inside the
	// tunnel (no WireGuard handshake, or no answer).
	errTunnelDial = errors.New("no answer")
	// errDisabled: the broker's hello reply says this device may not
	// connect until an operator acts (a *disabledError).
	errDisabled = errors.New("device disabled on the broker")
	// errNudged: a broker called (nudged) while the attempt was dialling
	// or waiting for the hello's answer; Run calls again at once.
	errNudged = errors.New("a broker called while dialling")
)

// disabledError is the broker's refusal of a disabled or decommissioned
// device, with the broker's words.
type disabledError struct{ reason string }

func (e *disabledError) Error() string        { return errDisabled.Error() + ": " + e.reason }
func (e *disabledError) Is(target error) bool { return target == errDisabled }

// unavailableError is a broker of several that cannot serve this device
// now (HelloUnavailable): the next endpoint is tried at once.
type unavailableError struct{ reason string }

func (e *unavailableError) Error() string { return "broker unavailable: " + e.reason }

// goodbyeWait bounds how long a clean stop waits for the broker to close
// its side: past it the connector stops anyway, and the broker learns of
// it from silence, as from a crash.
const goodbyeWait = time.Second

// goodbye ends the broker session the way a clean stop should: a FIN
// through the tunnel (TCP half-close), after which the broker closes its
// side and marks the device offline at once. Closing the WireGuard device
// straight away would lose that FIN, and the broker would call the device
// online until its keepalives had been missing for SilentAfter intervals.
func (c *Connector) goodbye(sess *yamux.Session, conn net.Conn) {
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	select {
	case <-sess.CloseChan():
		c.log.Info("said goodbye to the broker")
	case <-time.After(goodbyeWait):
		c.log.Info("broker did not answer the goodbye; stopping anyway")
	}
}

// checkTunnel reads liveness from WireGuard instead of an application ping:
// with persistent keepalive the device re-handshakes every two minutes, so
// a last handshake older than WireGuard's reject-after time (180 s) plus
// slack means nothing can pass and the TCP connection inside is dead.
func (c *Connector) checkTunnel() error {
	st, ok, err := c.dev.Peer(c.brokerKey)
	if err != nil {
		return fmt.Errorf("read broker peer: %w", err)
	}
	if !ok {
		return errors.New("broker peer missing")
	}
	if !st.LastHandshake.IsZero() && time.Since(st.LastHandshake) > 200*time.Second+c.Keepalive() {
		return fmt.Errorf("tunnel silent: last handshake %s ago", time.Since(st.LastHandshake).Round(time.Second))
	}
	return nil
}

func (c *Connector) accept(sess *yamux.Session) error {
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return err
		}
		go c.serveStream(st)
	}
}

// served is one session stream being served, so that a Reset can drop it.
type served struct {
	st *yamux.Stream
	mu sync.Mutex
	tc net.Conn // the service's connection, once dialled
	// reset: the broker dropped the stream; tc, if any, is closed, and
	// one dialled later is closed at once.
	reset bool
}

// drop closes the stream and the service's connection at once, both ways.
func (s *served) drop() {
	s.mu.Lock()
	s.reset = true
	tc := s.tc
	s.mu.Unlock()
	if tc != nil {
		tc.Close()
	}
	s.st.Close()
}

// setConn records the service's connection; false if the stream was
// reset meanwhile (the caller closes tc).
func (s *served) setConn(tc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tc = tc
	return !s.reset
}

// serveStream answers one stream: header, allowlist lookup, dial, status,
// then bytes both ways.
func (c *Connector) serveStream(st *yamux.Stream) {
	st.SetDeadline(time.Now().Add(10 * time.Second))
	open, err := tunnel.ReadStreamOpen(st)
	if err == nil && open.Control != nil {
		c.control(st, *open.Control)
		return
	}
	if err == nil && open.Reset != nil {
		c.reset(st, *open.Reset)
		return
	}
	h := open.Header
	if err != nil {
		c.log.Warn("bad stream header", "err", err)
		tunnel.WriteStreamStatus(st, tunnel.StreamStatus{Code: tunnel.StatusBadHeader, Reason: err.Error()})
		st.Close()
		return
	}
	// No logger With per stream: it formats its attributes at once, and a
	// busy device opens streams by the thousand.
	who := func(args ...any) []any {
		return append([]any{"session", h.SessionID.String(), "service", h.Service}, args...)
	}
	target, ok := c.cfg.Services[h.Service]
	if !ok {
		c.log.Warn("stream for a service this device does not expose", who()...)
		// Only that: the list of what the device exposes is no business of
		// whoever asked for something else (issue 10).
		tunnel.WriteStreamStatus(st, tunnel.StreamStatus{Code: tunnel.StatusUnknownService,
			Reason: fmt.Sprintf("service %q is not exposed by this device", h.Service)})
		st.Close()
		return
	}
	// Registered before the status promises resets, so that a Reset,
	// which the broker sends only after reading that promise, finds it.
	sv := &served{st: st}
	id := st.StreamID()
	c.streamsMu.Lock()
	c.streams[id] = sv
	c.streamsMu.Unlock()
	defer func() {
		c.streamsMu.Lock()
		delete(c.streams, id)
		c.streamsMu.Unlock()
	}()
	d := net.Dialer{Timeout: 10 * time.Second}
	tc, err := d.Dial("tcp", target)
	if err != nil {
		c.log.Warn("dial service", who("target", target, "err", err)...)
		tunnel.WriteStreamStatus(st, tunnel.StreamStatus{Code: tunnel.StatusDialFailed, Reason: fmt.Sprintf("dial %s: %v", h.Service, unwrapOpError(err))})
		st.Close()
		return
	}
	if !sv.setConn(tc) {
		tc.Close()
		return
	}
	if err := tunnel.WriteStreamStatus(st, tunnel.StreamStatus{Code: tunnel.StatusOK, Resets: true}); err != nil {
		tc.Close()
		st.Close()
		return
	}
	st.SetDeadline(time.Time{})
	// Per stream, debug only: a busy device opens streams by the
	// thousand (a web UI, a forward), and its log is for its operator.
	debug := c.log.Enabled(context.Background(), slog.LevelDebug)
	if debug {
		c.log.Debug("stream open", who("target", target)...)
	}
	in, out := tunnel.Join(tunnel.YamuxStream{Stream: st}, tc.(*net.TCPConn))
	if debug {
		c.log.Debug("stream closed", who("bytes_in", in, "bytes_out", out)...)
	}
}

// reset drops the session stream the broker names, if it is still served.
func (c *Connector) reset(st *yamux.Stream, r tunnel.Reset) {
	st.Close()
	c.streamsMu.Lock()
	sv := c.streams[r.StreamID]
	c.streamsMu.Unlock()
	if sv == nil {
		return // over already
	}
	c.log.Debug("stream reset by the broker", "stream", r.StreamID)
	sv.drop()
}

// control applies a setting the broker sent over the live session and
// answers with what is now in effect.
func (c *Connector) control(st *yamux.Stream, ctl tunnel.Control) {
	defer st.Close()
	now, err := c.applyKeepalive(ctl.KeepaliveSeconds, "control stream")
	if err != nil {
		c.log.Warn("apply keepalive", "err", err)
	}
	tunnel.WriteControl(st, tunnel.Control{KeepaliveSeconds: uint16(now / time.Second)})
}

func unwrapOpError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// networkChanged rebinds, which sends a keepalive from the new address.
func (c *Connector) networkChanged(addrs, reason string) {
	c.log.Info("local network changed; rebinding", "addrs", addrs, "reason", reason)
	if err := c.dev.Rebind(); err != nil {
		c.log.Warn("rebind", "err", err)
	}
}
