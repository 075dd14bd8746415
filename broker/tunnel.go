package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
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
	barred := b.barred[src.Addr().Unmap()]
	b.mu.Unlock()
	if p == nil {
		if barred != nil {
			b.refuseBarred(c, barred)
			return
		}
		if ep := b.enrollPeerAt(src.Addr().Unmap()); ep != nil {
			b.serveEnroll(c, ep)
			return
		}
		// Cryptokey routing only lets in addresses of peers, so this is
		// a device removed a moment ago.
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
	// The device's keepalive setting rides in the reply, so a connector
	// uses it from its first idle second. A reply's body is read (and, if
	// ok, ignored) by connectors before settings: no version to negotiate.
	b.mu.Lock()
	setting := p.dev.KeepaliveSeconds
	b.mu.Unlock()
	// One of several brokers serves a device only with its lease: one
	// that cannot take it (cut off from the database) says so, and the
	// connector tries its next endpoint (fleet.go).
	if err := b.admitToFleet(p); err != nil {
		log.Warn("device not admitted: no lease", "err", err)
		b.cfg.Metrics.Handshake("unavailable", false)
		tunnel.WriteHelloReply(c, tunnel.HelloReply{Code: tunnel.HelloUnavailable, Reason: "this broker cannot reach its database now: try another"})
		c.Close()
		return
	}
	if err := tunnel.WriteHelloReply(c, tunnel.HelloReply{Code: tunnel.HelloOK, KeepaliveSeconds: uint16(setting)}); err != nil {
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	// Only the broker opens streams (PROTOCOL.md): the first frame by
	// which the device opens one fails the tunnel's read, so yamux ends
	// the session before it buffers a byte of that stream's, and a
	// connector that does so (broken, or not ours) holds nothing. The
	// device's sessions end device_closed; an honest connector
	// reconnects. yamux's accept backlog, which is also how many of the
	// broker's own opens may await the device's acknowledgement at once,
	// stays at its default.
	guarded := tunnel.RefuseStreamOpens(c, func() {
		log.Warn("device opened a stream, which the protocol forbids: closing its tunnel")
	})
	// A stream's opening leaves with its header, in one packet.
	sess, err := yamux.Client(tunnel.CoalesceFrames(guarded, tunnel.OpenHold), b.ycfg)
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
	p.helloKeepalive = tunnel.DefaultKeepalive
	if h.KeepaliveSeconds > 0 {
		p.helloKeepalive = time.Duration(h.KeepaliveSeconds) * time.Second
	}
	// A hello does not say whether the connector understands settings.
	p.keepalive = p.assumedKeepalive(p.dev.KeepaliveSeconds)
	if p.dev.KeepaliveSeconds != setting {
		// Changed between the reply and here: upsert saw no session.
		go b.sendKeepalive(p)
	}
	p.lastRx = now
	keepalive := p.keepalive
	b.mu.Unlock()
	if old != nil {
		old.Close()
	}
	log.Info("device connected", "version", h.ConnectorVersion, "keepalive", keepalive, "keepalive_setting", time.Duration(setting)*time.Second, "services", h.Services)
	b.recordServices(p, h.Services)
	b.cfg.Metrics.Handshake("ok", reconnect)
	b.writePresence(p, true)
	b.recordOnline(p, prevVersion, h.ConnectorVersion)
	// Record the endpoint now, not at the next tick: after a crash the
	// broker can nudge only devices whose endpoint it knows.
	b.kickPresence()
	// One goroutine per device follows its session (yamux runs two more,
	// wireguard-go two per peer): goroutine stacks are a fifth of an idle
	// device's memory.
	go func() {
		refuseStreams(sess, log)
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
			b.deviceDown(p)
			b.writePresence(p, false)
			b.recordOffline(p, reason)
		}
		b.kickPresence() // recount devices online
	}()
}

// recordServices stores the service names a connector announced, when they
// differ from what is known; nil (a hello that did not say) keeps what was
// known, which may be nil too: unknown.
func (b *Broker) recordServices(p *peer, services []string) {
	if services == nil {
		return
	}
	b.mu.Lock()
	same := p.dev.Services != nil && slices.Equal(p.dev.Services, services)
	id, name := p.dev.ID, p.dev.Name
	b.mu.Unlock()
	if same {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.db.SetDeviceServices(ctx, id, services); err != nil {
		b.cfg.Metrics.PostgresError()
		b.log.Warn("record services", "device", name, "err", err)
		return
	}
	b.mu.Lock()
	p.dev.Services = services
	b.mu.Unlock()
}

// assumedKeepalive is the interval liveness is judged by while the device
// has not said which it uses: the longer of its own (from its hello) and
// the operators' setting (seconds), so that neither a connector that took
// the setting nor one too old to know of it is called offline between two
// of its keepalives.
func (p *peer) assumedKeepalive(setting int) time.Duration {
	return max(p.helloKeepalive, time.Duration(setting)*time.Second)
}

// sendKeepalive tells a connected device its keepalive setting now, on a
// control stream of the live session: a change made while a device is
// connected (months, for some) takes effect at once, and neither its
// session nor its open streams end. It costs one stream's few packets per
// change, and nothing while nothing changes: no periodic traffic.
//
// The connector answers with the keepalive it now uses, which becomes the
// one liveness is judged by. A connector before control streams answers
// with a bad-header status; it keeps its own interval, and liveness is
// judged by the longer of that and the setting.
func (b *Broker) sendKeepalive(p *peer) {
	p.ctlMu.Lock()
	defer p.ctlMu.Unlock()
	b.mu.Lock()
	sess, setting, name := p.sess, p.dev.KeepaliveSeconds, p.dev.Name
	p.ctlSeq++
	seq := p.ctlSeq
	b.mu.Unlock()
	if sess == nil {
		return // the next hello carries it
	}
	log := b.log.With("device", name)
	applied, err := b.control(sess, tunnel.Control{KeepaliveSeconds: uint16(setting)})
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.sess != sess || p.ctlSeq != seq {
		return
	}
	if err != nil {
		p.keepalive = p.assumedKeepalive(setting)
		log.Warn("device did not take its keepalive setting (connector older than control streams?)", "err", err, "judged_by", p.keepalive)
		return
	}
	if applied > 0 {
		p.keepalive = applied
	}
	log.Info("device keepalive changed live", "setting", time.Duration(setting)*time.Second, "in_effect", applied)
}

// control sends one Control on a stream of its own and reads the answer.
func (b *Broker) control(sess *yamux.Session, c tunnel.Control) (time.Duration, error) {
	st, err := sess.OpenStream()
	if err != nil {
		return 0, fmt.Errorf("open control stream: %w", err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(15 * time.Second))
	if err := tunnel.WriteControl(st, c); err != nil {
		return 0, fmt.Errorf("write control: %w", err)
	}
	// Half-close: a connector that reads a stream header (20 bytes) from
	// these 5 finds it truncated at once instead of at its deadline.
	st.Close()
	ans, err := tunnel.ReadControl(st)
	if err != nil {
		return 0, fmt.Errorf("read control answer: %w", err)
	}
	return time.Duration(ans.KeepaliveSeconds) * time.Second, nil
}

func (b *Broker) writePresence(p *peer, online bool) {
	p.presenceMu.Lock()
	defer p.presenceMu.Unlock()
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

// kickGap is the least time between a presence pass and a kicked one.
const kickGap = time.Second

// kickPresence asks presenceLoop for a pass now (within kickGap).
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
//
// A kick (a hello, a disconnect) asks for a pass now, but at most one
// kicked pass runs per kickGap: a restarted broker's fleet says hello a few
// hundred times a second, and each pass reads every peer.
func (b *Broker) presenceLoop(ctx context.Context) {
	t := time.NewTicker(b.cfg.PresenceInterval)
	defer t.Stop()
	gap := min(kickGap, b.cfg.PresenceInterval)
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.kick:
			if wait := gap - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		last = time.Now()
		if err := b.presence(ctx); err != nil {
			b.log.Warn("read presence", "err", err)
		}
	}
}

// peerAppender is a Network that reads peers into a slice it is given
// (wgnet.Device.AppendPeers).
type peerAppender interface {
	AppendPeers([]wgnet.PeerStats) ([]wgnet.PeerStats, error)
}

func (b *Broker) presence(ctx context.Context) error {
	var stats []wgnet.PeerStats
	var err error
	if a, ok := b.dev.(peerAppender); ok {
		// presenceLoop is the only caller: the slice of the last pass
		// is reused, not left as garbage every pass.
		stats, err = a.AppendPeers(b.peerStats[:0])
		b.peerStats = stats
	} else {
		stats, err = b.dev.Peers()
	}
	if err != nil {
		return err
	}
	now := b.cfg.Now()
	type action struct {
		p        *peer
		silent   bool
		reset    bool
		silence  time.Duration // how long the peer had been silent, for a reset
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
		} else if !p.lastRx.IsZero() && silence < 2*p.keepalive+b.cfg.PresenceInterval {
			// Talking to us but not connected: its TCP connection is
			// from a previous life of this broker. Or it has just
			// handshaken and its hello is on the way: a nudge then
			// would end the session it is opening, so only talk
			// without a session for longer than a hello may take counts.
			if p.talkingSince.IsZero() {
				p.talkingSince = now
			}
			a.nudge = now.Sub(p.talkingSince) > b.cfg.HelloTimeout && now.Sub(p.nudgedAt) > 30*time.Second
		}
		if p.sess != nil || silence >= 2*p.keepalive+b.cfg.PresenceInterval {
			p.talkingSince = time.Time{}
		}
		// Once per silence episode: a peer never heard from still has the
		// fresh state it was added with. A session closed as silent in this
		// pass is reset on the next, after its offline event.
		if !a.silent && !p.lastRx.IsZero() && silence > b.cfg.ResetAfter && p.resetAt.Before(p.lastRx) {
			p.resetAt = now
			a.reset = true
			a.silence = silence
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
			} else {
				silentFor := a.silence.Round(time.Second)
				b.log.Info("device silent; handshake state reset", "device", a.p.dev.Name, "silent_for", silentFor)
				b.recordEvent(a.p, fieldpass.DeviceHandshakeReset, func(e *fieldpass.DeviceEvent) {
					e.Details = map[string]any{
						"silent_for":         silentFor.String(),
						"silent_for_seconds": int(silentFor / time.Second),
						"reset_after":        b.cfg.ResetAfter.String(),
					}
				})
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
		// The device comes back by its own retries; the presence loop
		// nudges it again if it talks without a session.
		b.log.Warn("nudge queue full: device left to its own retries", "device", p.dev.Name, "queue", nudgeQueue)
	}
}

const (
	// nudgeQueue bounds the devices waiting for a nudge: a broker of
	// 10,000 devices queues them all at a restart.
	nudgeQueue = 1 << 16
	// nudgeWithin is how soon a restart's queue should be cleared: the
	// pace rises above NudgeRate to meet it.
	nudgeWithin = 45 * time.Second
	// nudgeMaxRate caps that pace.
	nudgeMaxRate = 1000
)

// nudgePace is the gap between two nudges with queued waiting: NudgeRate,
// or faster when the queue would take longer than nudgeWithin at it.
func nudgePace(rate, queued int) time.Duration {
	if need := int(float64(queued) / nudgeWithin.Seconds()); need > rate {
		rate = min(need, nudgeMaxRate)
	}
	return time.Second / time.Duration(rate)
}

// nudgeLoop dials the nudge port of devices that must reconnect, at the
// pace nudgePace sets, with jitter, so a restarted broker's fleet comes
// back spread out rather than in one storm.
//
// The pace a queue set holds until the queue is empty: recomputed from
// what is left, it fell as the queue drained (a restart of 10,000 devices
// was nudged at 222 a second at first, 50 at the end, over 101 s instead
// of 45). And each nudge has its time on a schedule rather than a sleep
// after the last, so the loop's own delays do not slow it (the sleeps of
// 4.5 ms came to 7 on a busy machine).
func (b *Broker) nudgeLoop(ctx context.Context) {
	var (
		next time.Time // when the next nudge may go
		rate int       // the pace of the queue being drained; 0: none
	)
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
			var gap time.Duration
			gap, rate = nudgeSchedule(b.cfg.NudgeRate, rate, len(b.nudgeCh))
			now := time.Now()
			if next.Before(now.Add(-gap)) {
				next = now // after a pause, no burst to catch up
			}
			next = next.Add(gap/2 + rand.N(gap))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(next)):
			}
		}
	}
}

// nudgeSchedule is the gap before the next nudge with queued waiting, and
// the rate to hold for the rest of this queue: nudgePace's, but never
// slower than the queue's rate so far (held, the rate the queue was given
// when it was longest).
func nudgeSchedule(setRate, held, queued int) (time.Duration, int) {
	if queued == 0 {
		return nudgePace(setRate, 0), 0
	}
	gap := nudgePace(max(setRate, held), queued)
	return gap, int(time.Second / gap)
}

// nudgeDial bounds a nudge's dial to less than TCP's initial SYN
// retransmission timeout (1 s), so each nudge sends one SYN: that SYN is
// the nudge (the connector's tunnel sees it whether or not anything
// listens). A device without a WireGuard session holds it in its peer's
// staged queue, each packet in a 64 KiB buffer, until a handshake
// completes or fails (90 s). A 10 s dial sent it up to four times: in a
// 10,000-device restart whose fleet was slow to answer, the broker's live
// heap reached 2.2 GB in 4.5 minutes with it, 1.1 GB with this one
// (bench/README.md).
const nudgeDial = 900 * time.Millisecond

func (b *Broker) nudge(ctx context.Context, p *peer) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	held := b.heldElsewhere(hctx, p.dev.ID)
	cancel()
	if held {
		return // came back to another broker of the fleet meanwhile (fleet.go)
	}
	ctx, cancel = context.WithTimeout(ctx, nudgeDial)
	defer cancel()
	c, err := b.dev.DialTCP(ctx, netip.AddrPortFrom(p.dev.TunnelAddr, tunnel.NudgePort))
	if err == nil {
		c.Close() // nothing should listen there; harmless if something does
	}
	// The SYN waits in wireguard-go for the device's handshake, in a 64
	// KiB buffer, through up to 90 s of attempts: for each device of a
	// restart that is not there. A device that is there has answered
	// within one retry of the handshake.
	key := p.key
	time.AfterFunc(nudgeHold, func() { b.dev.DropQueued(key) })
}

// nudgeHold is how long a nudge's packet may wait for the device's
// handshake: past wireguard-go's first retry (5 s, RekeyTimeout).
const nudgeHold = 7 * time.Second

// refuseStreams closes sess at the first stream the device opens on it,
// should one get past tunnel.RefuseStreamOpens, which ends the session at
// such a stream's first frame: the protocol forbids it (PROTOCOL.md), so a
// connector that does is broken or not ours, and closing frees everything
// it sent at once. It returns when sess has ended.
func refuseStreams(sess *yamux.Session, log *slog.Logger) {
	st, err := sess.AcceptStream()
	if err != nil {
		return // the session ended
	}
	st.Close()
	log.Warn("device opened a stream, which the protocol forbids: closing its tunnel")
	sess.Close()
}
