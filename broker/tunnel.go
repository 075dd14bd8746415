package broker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/tunnel"
)

// acceptLoop takes connectors' TCP connections inside the tunnel. Each gets
// HelloTimeout to identify itself, so a stalled peer holds nothing.
func (b *Broker) acceptLoop(ctx context.Context) error {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept in tunnel: %w", err)
		}
		go b.handshake(c)
	}
}

// handshake checks a connector's hello against the identity WireGuard
// vouches for (the tunnel source address is bound to the device's key) and
// starts its yamux session.
func (b *Broker) handshake(c net.Conn) {
	src, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		c.Close()
		return
	}
	b.mu.Lock()
	p := b.byAddr[src.Addr().Unmap()]
	b.mu.Unlock()
	if p == nil {
		// Cryptokey routing only lets in addresses of active peers, so
		// this is a device removed a moment ago.
		c.Close()
		return
	}
	log := b.log.With("device", p.dev.Name)
	c.SetDeadline(time.Now().Add(b.cfg.HelloTimeout))
	h, err := tunnel.ReadHello(c)
	if err != nil {
		code, result := tunnel.HelloRejected, "rejected"
		if errors.Is(err, tunnel.ErrVersion) {
			code, result = tunnel.HelloVersion, "version"
		}
		log.Warn("bad hello", "err", err)
		b.cfg.Metrics.Handshake(result, false)
		tunnel.WriteHelloReply(c, tunnel.HelloReply{Code: code, Reason: err.Error()})
		c.Close()
		return
	}
	if h.DeviceID.String() != p.dev.ID {
		log.Warn("hello names another device", "claimed", h.DeviceID.String())
		b.cfg.Metrics.Handshake("rejected", false)
		tunnel.WriteHelloReply(c, tunnel.HelloReply{Code: tunnel.HelloRejected, Reason: "device id does not match the tunnel identity"})
		c.Close()
		return
	}
	if err := tunnel.WriteHelloReply(c, tunnel.HelloReply{Code: tunnel.HelloOK}); err != nil {
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	sess, err := yamux.Client(c, tunnel.YamuxConfig(b.cfg.Window))
	if err != nil {
		log.Warn("start session", "err", err)
		c.Close()
		return
	}
	now := b.cfg.Now()
	b.mu.Lock()
	if b.closed || b.byID[p.dev.ID] != p {
		b.mu.Unlock()
		sess.Close()
		return
	}
	old := p.sess
	p.sess = sess
	// A device that said hello before in this process is reconnecting.
	reconnect := p.hist.hellos > 0
	p.hist.hellos++ // a new offline episode: alerts armed before it lapse
	prevVersion := p.version
	if prevVersion == "" {
		prevVersion = p.dev.Presence.ConnectorVersion
	}
	p.version = h.ConnectorVersion
	p.hist.offlineReason = ""
	if h.KeepaliveSeconds > 0 {
		p.keepalive = time.Duration(h.KeepaliveSeconds) * time.Second
	}
	p.lastRx = now
	b.mu.Unlock()
	if old != nil {
		old.Close()
	}
	log.Info("device connected", "version", h.ConnectorVersion, "keepalive", p.keepalive)
	b.cfg.Metrics.Handshake("ok", reconnect)
	b.writePresence(p, true)
	b.recordOnline(p, prevVersion, h.ConnectorVersion)
	// Record the endpoint now, not at the next tick: after a crash the
	// broker can nudge only devices whose endpoint it knows.
	b.kickPresence()
	go func() {
		<-sess.CloseChan()
		b.mu.Lock()
		current := p.sess == sess
		reason := p.hist.offlineReason
		if current {
			p.sess = nil
			p.hist.offlineReason = ""
		}
		b.mu.Unlock()
		if current {
			log.Info("device disconnected")
			b.writePresence(p, false)
			b.recordOffline(p, reason)
		}
		b.kickPresence() // recount devices online
	}()
}

func (b *Broker) writePresence(p *peer, online bool) {
	b.mu.Lock()
	pr := fieldpass.Presence{Online: online, LastSeen: p.lastRx, ConnectorVersion: p.version, BrokerID: b.cfg.ID}
	if p.endpoint.IsValid() {
		pr.Endpoint = p.endpoint.String()
		p.endpointSaved = online
	}
	id, name := p.dev.ID, p.dev.Name
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.db.UpdatePresence(ctx, id, pr); err != nil {
		b.cfg.Metrics.PostgresError()
		b.log.Warn("write presence", "device", name, "err", err)
	}
}

// kickPresence asks presenceLoop for a pass now.
func (b *Broker) kickPresence() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// presenceLoop reads every peer's tunnel counters each PresenceInterval.
// Received bytes growing is the liveness signal; silence past SilentAfter
// keepalives ends the session, silence past ResetAfter resets the peer's
// handshake state, and a device that talks but has no session is nudged.
func (b *Broker) presenceLoop(ctx context.Context) {
	t := time.NewTicker(b.cfg.PresenceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.kick:
		}
		if err := b.presence(ctx); err != nil {
			b.log.Warn("read presence", "err", err)
		}
	}
}

func (b *Broker) presence(ctx context.Context) error {
	stats, err := b.dev.Peers()
	if err != nil {
		return err
	}
	now := b.cfg.Now()
	type action struct {
		p        *peer
		silent   bool
		reset    bool
		nudge    bool
		endpoint bool
		// roamed: the endpoint changed during a session, from prev.
		roamed bool
		prev   netip.AddrPort
		to     netip.AddrPort
		// clone: the endpoint flaps between pair (flaps changes).
		clone bool
		pair  [2]netip.AddrPort
		flaps int
	}
	var acts []action
	var touched []string
	b.mu.Lock()
	online := 0
	for _, p := range b.byID {
		if p.sess != nil {
			online++
		}
	}
	for _, st := range stats {
		p := b.byKey[st.PublicKey]
		if p == nil {
			continue
		}
		var a action
		a.p = p
		if st.RxBytes != p.rxBytes {
			p.rxBytes = st.RxBytes
			p.lastRx = now
		}
		if st.Endpoint.IsValid() && st.Endpoint != p.endpoint {
			a.prev = p.endpoint
			a.to = st.Endpoint
			p.endpoint = st.Endpoint
			a.endpoint = p.sess != nil
			a.roamed = a.endpoint && a.prev.IsValid()
			a.pair, a.flaps, a.clone = p.hist.noteMove(st.Endpoint, now)
		} else if p.sess != nil && !p.endpointSaved {
			a.endpoint = true
		}
		silence := now.Sub(p.lastRx)
		if p.sess != nil {
			if silence > time.Duration(b.cfg.SilentAfter)*p.keepalive+b.cfg.PresenceInterval {
				a.silent = true
			} else if now.Sub(p.lastTouch) >= time.Minute {
				p.lastTouch = now
				touched = append(touched, p.dev.ID)
			}
		} else if !p.lastRx.IsZero() && silence < 2*p.keepalive+b.cfg.PresenceInterval && now.Sub(p.nudgedAt) > 30*time.Second {
			// Talking to us but not connected: its TCP connection is
			// from a previous life of this broker.
			a.nudge = true
		}
		// Once per silence episode: a peer never heard from still has the
		// fresh state it was added with.
		if !p.lastRx.IsZero() && silence > b.cfg.ResetAfter && p.resetAt.Before(p.lastRx) {
			p.resetAt = now
			a.reset = true
		}
		if a.silent || a.reset || a.nudge || a.endpoint || a.clone {
			acts = append(acts, a)
		}
	}
	b.mu.Unlock()
	b.cfg.Metrics.DevicesOnline(online)
	for _, a := range acts {
		if a.silent {
			b.mu.Lock()
			sess := a.p.sess
			if sess != nil {
				a.p.hist.offlineReason = "silent"
			}
			b.mu.Unlock()
			b.log.Info("device silent; closing its session", "device", a.p.dev.Name)
			if sess != nil {
				sess.Close()
			}
		}
		if a.reset {
			// WireGuard refuses handshakes whose timestamp is not newer
			// than the last accepted one; a device that rebooted into 1970
			// would be locked out for good. Silent this long, the peer has
			// no valid session to lose.
			if err := b.dev.ResetPeer(a.p.key, false); err != nil {
				b.log.Warn("reset peer", "device", a.p.dev.Name, "err", err)
			}
		}
		if a.nudge {
			b.queueNudge(a.p)
		}
		if a.endpoint {
			b.log.Info("device endpoint", "device", a.p.dev.Name, "endpoint", a.p.endpoint)
			b.writePresence(a.p, true)
		}
		if a.roamed {
			prev := a.prev.String()
			b.recordEvent(a.p, fieldpass.DeviceEndpointChanged, func(e *fieldpass.DeviceEvent) { e.PreviousEndpoint = prev })
			b.alert(a.p, alerts.EndpointChanged, map[string]any{"endpoint": a.to.String(), "previous_endpoint": prev})
		}
		if a.clone {
			b.recordClone(a.p, a.pair, a.flaps)
		}
	}
	if len(touched) > 0 {
		if err := b.db.TouchDevices(ctx, touched, now); err != nil {
			b.cfg.Metrics.PostgresError()
			return fmt.Errorf("write last seen: %w", err)
		}
	}
	return nil
}

func (b *Broker) queueNudge(p *peer) {
	b.mu.Lock()
	p.nudgedAt = b.cfg.Now()
	b.mu.Unlock()
	select {
	case b.nudgeCh <- p:
	default:
	}
}

// nudgeLoop dials the nudge port of devices that must reconnect, at most
// NudgeRate per second with jitter, so a restarted broker's fleet comes
// back spread out rather than in one storm.
func (b *Broker) nudgeLoop(ctx context.Context) {
	gap := time.Second / time.Duration(b.cfg.NudgeRate)
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-b.nudgeCh:
			b.mu.Lock()
			connected := p.sess != nil
			b.mu.Unlock()
			if !connected {
				go b.nudge(ctx, p)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(gap/2 + rand.N(gap)):
			}
		}
	}
}

func (b *Broker) nudge(ctx context.Context, p *peer) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := b.dev.DialTCP(ctx, netip.AddrPortFrom(p.dev.TunnelAddr, tunnel.NudgePort))
	if err == nil {
		c.Close() // nothing should listen there; harmless if something does
	}
}
