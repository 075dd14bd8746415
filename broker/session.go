package broker

// One live session and the byte counting of its streams. The manager that
// opens, polices and records sessions is Sessions (sessions.go).

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/brokerlink"
	"github.com/fieldpass/fieldpass/tunnel"
)

// Session is one live, recorded session: a person's connection to one
// device's service within one grant, carrying any number of streams, each
// counted on it. The connect endpoint carries its streams.
type Session struct {
	m        *Sessions
	rec      fieldpass.Session
	tid      tunnel.ID
	grantEnd time.Time
	// The session holds no tunnel: each stream goes through the device's
	// tunnel of the moment, so the session outlives a reconnect
	// (reconnect.go).
	done    chan struct{}
	in, out atomic.Int64 // bytes person->device, device->person
	// remote, for a session whose device another broker of the fleet
	// holds, is that broker's session, relayed over brokerlink: it is
	// decided, counted, recorded and policed there, and every method
	// below hands over to it (fleet_sessions.go).
	remote *brokerlink.Remote

	mu      sync.Mutex // guards timer, reason, ended, streams and the drop counts below
	reason  fieldpass.EndReason
	ended   time.Time
	timer   *time.Timer
	streams map[*countedStream]struct{}

	// The device's tunnel drops this session lived through: reconnects
	// counts those the device came back from, cut the streams in flight
	// they ended (each counted once, by noteDrop or by its Close), and
	// away says the device is away since awaySince, and awayUntil when
	// the session stops waiting for it. recorded* are the counts last
	// written to the row.
	reconnects, cut                 int
	recordedReconnects, recordedCut int
	away                            bool
	awaySince, awayUntil            time.Time

	writeMu sync.Mutex // one write of the end at a time

	// reached and dialErr (guarded by mu) tell a session that never got
	// to its service: no stream was ever accepted, and the connector
	// said why (its first refusal).
	reached bool
	dialErr string
	// lastOpen and lastCut (guarded by mu): when a stream last opened, and
	// when a device reconnect last cut one.
	lastOpen, lastCut time.Time

	// guarded by m.mu; touched by check only
	lastTotal  int64
	lastActive time.Time
	// the counts last written to the row while live (flushBytes)
	flushedIn, flushedOut int64
}

// ID is the session's id (its row's).
func (s *Session) ID() string { return s.rec.ID }

// Record is the session's row as opened, with the bytes so far.
func (s *Session) Record() fieldpass.Session {
	if s.remote != nil {
		return s.remote.Record()
	}
	r := s.rec
	r.BytesIn, r.BytesOut = s.in.Load(), s.out.Load()
	s.mu.Lock()
	r.End, r.EndReason = s.ended, s.reason
	r.DeviceReconnects, r.StreamsCut = s.reconnects, s.cut
	s.mu.Unlock()
	return r
}

// GrantEnd is when the grant that lets this session through ends.
func (s *Session) GrantEnd() time.Time { return s.grantEnd }

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} {
	if s.remote != nil {
		return s.remote.Done()
	}
	return s.done
}

// Reason says why the session ended ("" while live).
func (s *Session) Reason() fieldpass.EndReason {
	if s.remote != nil {
		return s.remote.Reason()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// End ends the session from the person's side (client_closed, or reason),
// unless it has ended already.
//
// A session the person closed (or that failed) without ever reaching the
// service, because the connector could not dial it, ends dial_failed
// instead: the record says the device's service was not there, with the
// connector's error in the audit event. One closed within cutEndWindow of
// a device reconnect cutting its last streams, none opened since, ends
// device_closed: its client gave up because the device's side went away
// (fieldpass ssh carries one stream per session and closes with it).
func (s *Session) End(reason fieldpass.EndReason) {
	if reason == "" || fieldpass.ValidateEndReason(reason) != nil {
		reason = fieldpass.EndClientClosed
	}
	if s.remote != nil {
		s.remote.End(reason)
		return
	}
	if reason == fieldpass.EndClientClosed || reason == fieldpass.EndError {
		s.mu.Lock()
		switch {
		case !s.reached && s.dialErr != "":
			reason = fieldpass.EndDialFailed
		case len(s.streams) == 0 && !s.lastCut.IsZero() && !s.lastCut.Before(s.lastOpen) && time.Since(s.lastCut) < cutEndWindow:
			reason = fieldpass.EndDeviceClosed
		}
		s.mu.Unlock()
	}
	s.m.end(s, reason, true)
}

// cutEndWindow is how soon after a device reconnect cut a session's last
// streams its client's close is taken as a consequence (Session.End).
const cutEndWindow = 2 * time.Second

// endDetails are the details the end's audit event adds to the record's.
func (s *Session) endDetails() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var d map[string]any
	if s.reason == fieldpass.EndDialFailed {
		d = map[string]any{"dial_error": s.dialErr}
	}
	if s.reconnects > 0 || s.cut > 0 {
		if d == nil {
			d = map[string]any{}
		}
		d["device_reconnects"], d["streams_cut"] = s.reconnects, s.cut
	}
	return d
}

// Stream opens one connection to the session's service, counted on it,
// through the device's tunnel of the moment. While the device is away (its
// tunnel dropped and the session waits for it, reconnect.go) it waits for
// the device, bounded by ctx and streamOpenTimeout, and then fails with a
// "device offline, reconnecting" error; the session goes on.
func (s *Session) Stream(ctx context.Context) (tunnel.HalfCloser, error) {
	if s.remote != nil {
		return s.remote.Stream(ctx)
	}
	if r := s.Reason(); r != "" {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session has ended (%s)", r)
	}
	if !s.m.cfg.Now().Before(s.grantEnd) {
		s.m.end(s, fieldpass.EndGrantExpired, true)
		return nil, fieldpass.Errorf(fieldpass.EEXPIRED, "grant expired")
	}
	ctx, cancel := context.WithTimeout(ctx, streamOpenTimeout)
	defer cancel()
	for {
		ys, err := s.tunnel(ctx)
		if err != nil {
			return nil, err
		}
		st, err := openStream(ctx, ys, s.rec.Device, s.rec.Service, s.tid)
		if err != nil {
			if ys.IsClosed() && ctx.Err() == nil {
				// The tunnel dropped under the open, before any byte of
				// the person's: wait for the next one.
				continue
			}
			var refused *serviceRefusal
			if errors.As(err, &refused) {
				s.mu.Lock()
				if s.dialErr == "" {
					s.dialErr = refused.status.Code.String() + ": " + refused.status.Reason
				}
				s.mu.Unlock()
			}
			return nil, err
		}
		// Through a live tunnel: if the device was away, it is back.
		s.m.noteBack(s, ys)
		cs := &countedStream{HalfCloser: st, s: s, ys: ys}
		s.mu.Lock()
		s.reached = true
		if s.reason != "" {
			r := s.reason
			s.mu.Unlock()
			cs.cut()
			return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session has ended (%s)", r)
		}
		s.streams[cs] = struct{}{}
		s.lastOpen = time.Now()
		s.mu.Unlock()
		return cs, nil
	}
}

// claimEnd marks s ended with reason at at; it reports whether this call
// ended it. The caller then updates the books and calls stop.
func (s *Session) claimEnd(reason fieldpass.EndReason, at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reason != "" {
		return false
	}
	s.reason, s.ended = reason, at
	return true
}

// stop closes Done and cuts s's streams.
func (s *Session) stop() {
	s.mu.Lock()
	streams, timer := s.streams, s.timer
	s.streams = nil
	s.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	close(s.done)
	for cs := range streams {
		cs.cut()
	}
}

// countedStream counts a device stream's bytes on its session.
type countedStream struct {
	tunnel.HalfCloser
	s  *Session
	ys *yamux.Session // the device's tunnel it goes through
}

func (c *countedStream) Read(p []byte) (int, error) {
	n, err := c.HalfCloser.Read(p)
	c.s.out.Add(int64(n))
	c.s.m.cfg.Metrics.BytesOut(n)
	return n, err
}

func (c *countedStream) Write(p []byte) (int, error) {
	n, err := c.HalfCloser.Write(p)
	c.s.in.Add(int64(n))
	c.s.m.cfg.Metrics.BytesIn(n)
	return n, err
}

func (c *countedStream) Close() error {
	c.s.mu.Lock()
	if _, ok := c.s.streams[c]; ok {
		delete(c.s.streams, c)
		if c.ys.IsClosed() {
			// Still open when its tunnel dropped: in flight, cut by the
			// device's reconnect (noteDrop did not get to it first).
			c.s.cut++
			c.s.lastCut = time.Now()
		}
	}
	c.s.mu.Unlock()
	return c.HalfCloser.Close()
}

// TunnelLost reports whether st, a stream of Session.Stream, ended because
// its device's tunnel dropped (the session itself may go on: the device is
// reconnecting), rather than by either end closing it.
func TunnelLost(st tunnel.HalfCloser) bool {
	c, ok := st.(*countedStream)
	return ok && c.ys.IsClosed()
}

// cut stops the stream both ways at once: a yamux Close alone is only a
// half-close, so expired deadlines fail the reads and writes in progress.
func (c *countedStream) cut() {
	if d, ok := c.HalfCloser.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Now())
	}
	c.HalfCloser.Close()
}
