package broker

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
)

// Device history (online, offline, roaming, version changes, suspected
// clones) is written by one goroutine from a bounded queue, never on the
// paths that carry streams or hellos: when the queue is full (Postgres down
// or slow) events are dropped and logged. History is an operator aid; the
// presence row and the audit log are the records that must not be lost.
//
// The bound follows the fleet: a restarted broker's devices all come back
// within about a minute (nudgeWithin), each with an online event and maybe
// a version change, so the queue holds historyPerDevice events per peer,
// at least historyQueue. It is a slice, not a channel of that size: it
// costs memory only while events wait.
const (
	historyQueue     = 1024
	historyPerDevice = 2
	historyTimeout   = 2 * time.Second

	// One key alternating between the same two endpoints cloneFlaps times
	// within cloneWindow is two devices holding one identity (a cloned SD
	// card): roaming moves on to new addresses, it does not swing back and
	// forth. Endpoints, not just IPs, are compared so that two clones behind
	// one carrier NAT are caught too.
	cloneWindow = 10 * time.Minute
	cloneFlaps  = 4
)

// historyWriter is the queue and the goroutine draining it into Postgres.
type historyWriter struct {
	mu      sync.Mutex // guards queue
	queue   []fieldpass.DeviceEvent
	pending chan struct{} // a token while queue may be non-empty
	stop    chan struct{}
	done    chan struct{}
}

// push queues e unless limit events wait already.
func (h *historyWriter) push(e fieldpass.DeviceEvent, limit int) bool {
	h.mu.Lock()
	ok := len(h.queue) < limit
	if ok {
		h.queue = append(h.queue, e)
	}
	h.mu.Unlock()
	if ok {
		select {
		case h.pending <- struct{}{}:
		default:
		}
	}
	return ok
}

// take returns the waiting events and empties the queue, handing it spare,
// the slice of the previous take, to fill next.
func (h *historyWriter) take(spare []fieldpass.DeviceEvent) []fieldpass.DeviceEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queue
	h.queue = spare[:0]
	return q
}

// peerHistory is a peer's history state; b.mu guards it.
type peerHistory struct {
	offlineReason string         // why its session is being closed, for the offline event
	moves         []endpointMove // endpoint changes within cloneWindow, oldest first
	cloneAt       time.Time      // last clone_suspected recorded

	// hellos counts accepted hellos in this process: a device_offline
	// alert fires only if no hello came since it was armed.
	hellos       uint64
	offlineTimer *time.Timer
}

type endpointMove struct {
	at time.Time
	to netip.AddrPort
}

func (b *Broker) startHistory() {
	h := &historyWriter{
		pending: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	b.history = h
	go func() {
		defer close(h.done)
		var spare []fieldpass.DeviceEvent
		write := func(ctx context.Context) {
			q := h.take(spare)
			for i := range q {
				if ctx.Err() != nil {
					return
				}
				b.writeEvent(ctx, q[i])
				q[i] = fieldpass.DeviceEvent{} // its Details are garbage now
			}
			// A restart's burst is not kept as capacity.
			spare = nil
			if cap(q) <= historyQueue {
				spare = q
			}
		}
		for {
			select {
			case <-h.pending:
				write(context.Background())
			case <-h.stop:
				// Drain what is queued, within a bound on the whole drain:
				// Close must not hang on a dead database.
				ctx, cancel := context.WithTimeout(context.Background(), historyTimeout)
				defer cancel()
				write(ctx)
				return
			}
		}
	}()
}

// stopHistory writes what is queued (within historyTimeout) and stops the
// writer. Events recorded afterwards are not written.
func (b *Broker) stopHistory() {
	if b.history == nil {
		return
	}
	close(b.history.stop)
	<-b.history.done
}

func (b *Broker) writeEvent(ctx context.Context, e fieldpass.DeviceEvent) {
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	if err := b.db.RecordDeviceEvent(ctx, e); err != nil {
		b.cfg.Metrics.PostgresError()
		b.log.Warn("device history dropped", "device_id", e.DeviceID, "kind", e.Kind, "err", err)
	}
}

// recordEvent queues an event of p's history without blocking. Call it
// without b.mu held.
func (b *Broker) recordEvent(p *peer, kind fieldpass.DeviceEventKind, fill func(*fieldpass.DeviceEvent)) {
	b.mu.Lock()
	e := fieldpass.DeviceEvent{
		DeviceID:         p.dev.ID,
		At:               b.cfg.Now(),
		Kind:             kind,
		BrokerID:         b.cfg.ID,
		ConnectorVersion: p.version,
	}
	if p.endpoint.IsValid() {
		e.Endpoint = p.endpoint.String()
	}
	name := p.dev.Name
	limit := max(historyQueue, historyPerDevice*len(b.byID))
	b.mu.Unlock()
	if fill != nil {
		fill(&e)
	}
	if !b.history.push(e, limit) {
		b.log.Warn("device history queue full; event dropped", "device", name, "kind", kind, "queue", limit)
	}
}

// recordOnline records a hello: online, and version_changed first when the
// connector's version differs from the one last known (presence row or an
// earlier session in this process).
func (b *Broker) recordOnline(p *peer, prevVersion, version string) {
	if prevVersion != "" && prevVersion != version {
		b.log.Info("connector version changed", "device", p.dev.Name, "from", prevVersion, "to", version)
		b.recordEvent(p, fieldpass.DeviceVersionChanged, func(e *fieldpass.DeviceEvent) {
			e.Details = map[string]any{"previous_version": prevVersion}
		})
	}
	b.recordEvent(p, fieldpass.DeviceOnline, nil)
	b.mu.Lock()
	if p.hist.offlineTimer != nil {
		p.hist.offlineTimer.Stop()
		p.hist.offlineTimer = nil
	}
	b.mu.Unlock()
}

// recordOffline records the end of p's session; reason is empty when the
// connector (or its network) closed it.
func (b *Broker) recordOffline(p *peer, reason string) {
	b.recordEvent(p, fieldpass.DeviceOffline, func(e *fieldpass.DeviceEvent) {
		if reason != "" {
			e.Details = map[string]any{"reason": reason}
		}
	})
	// Only a device that dropped off by itself is worth an alert: one
	// removed by an operator (disabled, decommissioned, rekeyed) or by
	// this broker's shutdown is not missing.
	if b.cfg.Alerts != nil && alertableOffline(reason) {
		b.armOfflineAlert(p, reason, b.cfg.Now())
	}
}

// alertableOffline reports whether an offline event's reason is one that
// arms a device_offline alert.
func alertableOffline(reason string) bool { return reason == "" || reason == "silent" }

// armOfflineAlert raises device_offline, saying p has been offline since
// since, if p is still offline, with no hello in between, OfflineAlertAfter
// from now: once per offline episode.
func (b *Broker) armOfflineAlert(p *peer, reason string, since time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || p.sess != nil {
		return
	}
	if p.hist.offlineTimer != nil {
		p.hist.offlineTimer.Stop()
	}
	hellos, armed := p.hist.hellos, b.cfg.Now()
	p.hist.offlineTimer = time.AfterFunc(b.cfg.OfflineAlertAfter, func() {
		b.mu.Lock()
		fire := !b.closed && b.byID[p.dev.ID] == p && p.sess == nil && p.hist.hellos == hellos
		if fire {
			p.hist.offlineTimer = nil
		}
		name, version := p.dev.Name, p.version
		var endpoint string
		if p.endpoint.IsValid() {
			endpoint = p.endpoint.String()
		}
		b.mu.Unlock()
		if !fire || b.seenElsewhere(p.dev.ID, armed) {
			return
		}
		d := map[string]any{
			"offline_since":     since.UTC().Format(time.RFC3339),
			"threshold":         b.cfg.OfflineAlertAfter.String(),
			"last_endpoint":     endpoint,
			"connector_version": version,
			"broker_id":         b.cfg.ID,
		}
		if reason != "" {
			d["reason"] = reason
		}
		b.log.Info("device offline past the alert threshold", "device", name, "since", since)
		b.cfg.Alerts.Notify(alerts.Alert{Kind: alerts.DeviceOffline, At: b.cfg.Now(), Device: name, Details: d, Subject: p.dev.ID})
	})
}

// reasonAtStart is the reason of a device_offline alert for a device that
// was already offline when this broker started.
const reasonAtStart = "offline when the broker started"

// armOfflineAtStart arms device_offline for the devices that are offline
// as the broker starts (seen at some time, not online at another broker):
// the timers armed by recordOffline died with the previous process, and a
// device that never comes back has no offline event here to arm one.
//
// The alert waits OfflineAlertAfter from start, not from the device's
// last_seen: every connector was cut off while the broker was down, and
// alerting at once for each device last seen more than the threshold ago
// would page about the whole fleet after every outage longer than the
// threshold, minutes before nearly all of it reconnects. A device has the
// threshold to come back; the alert still says offline_since = last_seen.
// Devices that are disabled, decommissioned or never enrolled are not
// peers, and a device never seen was never online to go offline.
//
// A restart does not repeat the alert of an episode the previous process
// (same broker id or another) had alerted, when that is knowable from the
// database: the device's newest online/offline event is an offline that
// armed an alert, and the broker that recorded it was still seeing some
// device (its presence rows' last_seen) OfflineAlertAfter after it. Where
// it is not knowable (a device that was offline when a broker started,
// history lost, the old threshold was longer) the alert is raised again:
// a duplicate is cheaper than a silence. One alert per device; a fleet
// larger than the Notifier's queue offline at once is dropped and counted
// past it (fieldpass_alerts_total{result="dropped"}).
func (b *Broker) armOfflineAtStart(ctx context.Context) {
	b.mu.Lock()
	var offline []*peer
	var ids []string
	alive := map[string]time.Time{} // broker id -> newest last_seen of a device it held
	for _, p := range b.byID {
		pr := p.dev.Presence
		if pr.BrokerID != "" && pr.LastSeen.After(alive[pr.BrokerID]) {
			alive[pr.BrokerID] = pr.LastSeen
		}
		if pr.LastSeen.IsZero() || p.sess != nil || (pr.Online && pr.BrokerID != b.cfg.ID) {
			continue
		}
		offline = append(offline, p)
		ids = append(ids, p.dev.ID)
	}
	b.mu.Unlock()
	if len(offline) == 0 {
		return
	}
	last, err := b.db.LastPresenceEvents(ctx, ids)
	if err != nil {
		b.cfg.Metrics.PostgresError()
		b.log.Warn("device history unreadable: offline devices may be alerted again", "err", err)
	}
	armed := 0
	for _, p := range offline {
		if e := last[p.dev.ID]; e != nil && e.Kind == fieldpass.DeviceOffline {
			reason, _ := e.Details["reason"].(string)
			if alertableOffline(reason) && !alive[e.BrokerID].Before(e.At.Add(b.cfg.OfflineAlertAfter)) {
				b.log.Debug("offline episode alerted before this start", "device", p.dev.Name, "since", e.At, "broker_id", e.BrokerID)
				continue
			}
		}
		b.armOfflineAlert(p, reasonAtStart, p.dev.Presence.LastSeen)
		armed++
	}
	b.log.Info("devices offline at start", "devices", len(offline), "alerts_armed", armed, "after", fieldpass.FormatDuration(b.cfg.OfflineAlertAfter))
}

// alert raises an alert about p; a no-op when alerts are off. Call it
// without b.mu held.
func (b *Broker) alert(p *peer, kind alerts.Kind, details map[string]any) {
	if b.cfg.Alerts == nil {
		return
	}
	b.mu.Lock()
	name, id := p.dev.Name, p.dev.ID
	b.mu.Unlock()
	b.cfg.Alerts.Notify(alerts.Alert{Kind: kind, At: b.cfg.Now(), Device: name, Details: details, Subject: id})
}

// noteMove records that p's endpoint changed to to, and reports whether the
// recent changes flap between two endpoints (a suspected clone, reported at
// most once per cloneWindow). b.mu must be held.
func (h *peerHistory) noteMove(to netip.AddrPort, now time.Time) (pair [2]netip.AddrPort, flaps int, suspect bool) {
	h.moves = append(h.moves, endpointMove{at: now, to: to})
	i := 0
	for i < len(h.moves) && now.Sub(h.moves[i].at) > cloneWindow {
		i++
	}
	h.moves = h.moves[i:]
	if len(h.moves) > 4*cloneFlaps {
		h.moves = h.moves[len(h.moves)-4*cloneFlaps:]
	}
	// The longest tail alternating x, y, x, y, ... between two endpoints.
	n := len(h.moves)
	if n < 2 || h.moves[n-1].to == h.moves[n-2].to {
		return pair, 0, false
	}
	x, y := h.moves[n-1].to, h.moves[n-2].to
	flaps = 2
	for j := n - 3; j >= 0; j-- {
		want := x
		if (n-1-j)%2 == 1 {
			want = y
		}
		if h.moves[j].to != want {
			break
		}
		flaps++
	}
	if flaps < cloneFlaps || (!h.cloneAt.IsZero() && now.Sub(h.cloneAt) < cloneWindow) {
		return pair, flaps, false
	}
	h.cloneAt = now
	return [2]netip.AddrPort{y, x}, flaps, true
}

// recordClone records and alerts on a suspected clone of p.
func (b *Broker) recordClone(p *peer, pair [2]netip.AddrPort, flaps int) {
	b.log.Warn("device identity flapping between two endpoints: suspected clone; disable it with fieldpass-broker device disable "+p.dev.Name,
		"device", p.dev.Name, "endpoint_a", pair[0], "endpoint_b", pair[1], "flaps", flaps, "window", cloneWindow)
	b.recordEvent(p, fieldpass.DeviceCloneSuspected, func(e *fieldpass.DeviceEvent) {
		e.Endpoint, e.PreviousEndpoint = pair[1].String(), pair[0].String()
		e.Details = map[string]any{"flaps": flaps, "window_seconds": int(cloneWindow / time.Second)}
	})
	b.alert(p, alerts.CloneSuspected, map[string]any{
		"endpoint_a": pair[0].String(), "endpoint_b": pair[1].String(), "flaps": flaps,
		"window_seconds": int(cloneWindow / time.Second),
		"action":         "fieldpass-broker device disable " + p.dev.Name,
	})
}
