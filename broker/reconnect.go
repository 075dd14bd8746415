package broker

// A session across its device's reconnects. A device's tunnel drops for
// reasons that are no one's decision: roaming, a NAT rebinding that forces
// a new handshake, a connector restart. The streams in flight through the
// old tunnel end with it (their TCP connections on the device are gone);
// the person's session does not. It holds no tunnel: each new stream takes
// the device's tunnel of the moment, and while the device is away a new
// stream waits for it (bounded by streamOpenTimeout) or fails with "device
// offline, reconnecting". Only a device not back within ReconnectWait ends
// the session (device_closed), and one the broker dropped (disabled,
// decommissioned) ends it at once (device_disabled). Every other rule
// (grant end and revocation, user, token, admin, idle, audit grace) goes
// on applying through the gap: the session stays live in the books.
//
// The record says so: the session counts the drops it came back from and
// the streams they cut, on its row (device_reconnects, streams_cut) and in
// a session.device_reconnected audit event per return.

import (
	"context"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
)

const (
	// streamOpenTimeout bounds Session.Stream, waiting for a device that
	// is away included: the deadline openStream gives a connector.
	streamOpenTimeout = 15 * time.Second
	// tunnelPoll is how often a session whose device is away looks for
	// its new tunnel (Broker.tunnelByID).
	tunnelPoll = 50 * time.Millisecond
)

// tunnel returns the device's live tunnel, waiting while the device is
// away, until ctx or the session ends.
func (s *Session) tunnel(ctx context.Context) (*yamux.Session, error) {
	var tick *time.Ticker
	for {
		ys, ok := s.m.tunnelByID(s.rec.DeviceID)
		if !ok {
			// No peer: the watcher ends the session with the reason.
			return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s is no longer reachable through this broker", s.rec.Device)
		}
		if ys != nil && !ys.IsClosed() {
			return ys, nil
		}
		if tick == nil {
			tick = time.NewTicker(tunnelPoll)
			defer tick.Stop()
		}
		select {
		case <-s.done:
			return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session has ended (%s)", s.Reason())
		case <-ctx.Done():
			return nil, s.awayError()
		case <-tick.C:
		}
	}
}

// awayError says that the device is away, and for how long the session
// waits for it.
func (s *Session) awayError() error {
	s.mu.Lock()
	until := s.awayUntil
	s.mu.Unlock()
	if until.IsZero() {
		return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s is offline, reconnecting: try again in a moment", s.rec.Device)
	}
	return fieldpass.Errorf(fieldpass.EUNAVAILABLE,
		"device %s is offline, reconnecting: try again in a moment (this session waits for it until %s)",
		s.rec.Device, until.UTC().Format(time.TimeOnly+" UTC"))
}

// watchDevice follows s's device from tunnel ys on: at each drop it counts
// the streams cut and waits for the device (awaitReturn); it ends s when
// the device does not come back.
func (m *Sessions) watchDevice(s *Session, ys *yamux.Session) {
	for {
		select {
		case <-s.done:
			return
		case <-ys.CloseChan():
		}
		m.noteDrop(s, ys)
		next, reason := m.awaitReturn(s, ys)
		if next == nil {
			if reason != "" {
				m.end(s, reason, true)
			}
			return
		}
		m.noteBack(s, next)
		ys = next
	}
}

// noteDrop marks s's device away, its tunnel ys having just closed, and
// counts the streams of s still open through ys as cut by the drop (a
// stream its consumer closes first counts itself, in countedStream.Close).
func (m *Sessions) noteDrop(s *Session, ys *yamux.Session) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for cs := range s.streams {
		if cs.ys == ys {
			delete(s.streams, cs)
			s.cut++
			s.lastCut = now
		}
	}
	s.away, s.awaySince = true, now
	if m.cfg.ReconnectWait > 0 {
		s.awayUntil = m.cfg.Now().Add(m.cfg.ReconnectWait)
	}
}

// awaitReturn waits, after tunnel old dropped, for the device's next
// tunnel and returns it; or nil and the reason to end s with: the device
// is no peer any more (deviceGoneReason), or not back within
// ReconnectWait (device_closed). Both nil: s ended meanwhile.
func (m *Sessions) awaitReturn(s *Session, old *yamux.Session) (*yamux.Session, fieldpass.EndReason) {
	wait := max(m.cfg.ReconnectWait, 0)
	if wait > 0 {
		m.log.Info("device tunnel dropped: session waits for the device", "session", s.rec.ID, "device", s.rec.Device, "wait", fieldpass.FormatDuration(wait))
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	tick := time.NewTicker(tunnelPoll)
	defer tick.Stop()
	for {
		// Checked first: a connector that reconnected has replaced its
		// tunnel before the broker closed the old one.
		ys, ok := m.tunnelByID(s.rec.DeviceID)
		switch {
		case !ok:
			return nil, m.deviceGoneReason(s.rec.DeviceID)
		case ys != nil && ys != old && !ys.IsClosed():
			if m.cfg.ReconnectWait < 0 {
				return nil, fieldpass.EndDeviceClosed
			}
			return ys, ""
		}
		select {
		case <-s.done:
			return nil, ""
		case <-timeout.C:
			m.log.Info("device not back in time: session ends", "session", s.rec.ID, "device", s.rec.Device, "wait", fieldpass.FormatDuration(wait))
			return nil, fieldpass.EndDeviceClosed
		case <-tick.C:
		}
	}
}

// noteBack records that s's device is back through tunnel ys, if s had it
// away: whoever sees the new tunnel first (watchDevice, or a stream opened
// through it) calls it. A ys closed by now is no return (noteDrop, which
// follows the close, may have marked s away since). The counts go on s's
// row with a session.device_reconnected event, in the background (a failed
// write leaves the counts to be written with the end).
func (m *Sessions) noteBack(s *Session, ys *yamux.Session) {
	s.mu.Lock()
	if !s.away || ys.IsClosed() {
		s.mu.Unlock()
		return
	}
	away := time.Since(s.awaySince)
	s.away, s.awayUntil = false, time.Time{}
	s.reconnects++
	r := fieldpass.SessionReconnect{
		Reconnects: s.reconnects, StreamsCut: s.cut,
		Cut: s.cut - s.recordedCut, Away: away,
	}
	s.mu.Unlock()
	m.log.Info("device back: session goes on", "session", s.rec.ID, "device", s.rec.Device,
		"away", away.Round(time.Millisecond), "streams_cut", r.Cut)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StoreTimeout)
		defer cancel()
		if err := m.db.SessionDeviceReconnected(ctx, s.rec.ID, m.brokerID, r); err != nil {
			m.storeErr(err)
			m.log.Warn("record device reconnect (the counts are written with the session's end)", "session", s.rec.ID, "err", err)
			return
		}
		s.recordedCounts(r.Reconnects, r.StreamsCut)
	}()
}

// recordedCounts notes counts the row now shows.
func (s *Session) recordedCounts(reconnects, cut int) {
	s.mu.Lock()
	s.recordedReconnects = max(s.recordedReconnects, reconnects)
	s.recordedCut = max(s.recordedCut, cut)
	s.mu.Unlock()
}

// unrecordedCounts returns s's drop counts if the row does not show them
// yet, else ok false.
func (s *Session) unrecordedCounts() (reconnects, cut int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconnects, s.cut, s.reconnects != s.recordedReconnects || s.cut != s.recordedCut
}

// deviceGoneReason says why the device with id deviceID is no peer of the
// broker any more. The broker removes a peer (before closing its session)
// only when the device left the active state, so a peer still present (a
// broker closing) means the tunnel itself dropped; failing that, the store
// says whether the device is still active.
func (m *Sessions) deviceGoneReason(deviceID string) fieldpass.EndReason {
	if _, ok := m.tunnelByID(deviceID); ok {
		return fieldpass.EndDeviceClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StoreTimeout)
	defer cancel()
	d, err := m.db.DeviceByID(ctx, deviceID)
	if err == nil && d.State == fieldpass.DeviceActive {
		return fieldpass.EndDeviceClosed
	}
	return fieldpass.EndDeviceDisabled
}
