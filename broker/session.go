package broker

// One live session and the byte counting of its streams. The manager that
// opens, polices and records sessions is Sessions (sessions.go).

import (
	"context"
	"errors"
	"fmt"
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

	mu      sync.Mutex // guards timer, reason, ended, streams, pending and the drop counts below
	reason  fieldpass.EndReason
	ended   time.Time
	timer   *time.Timer
	streams map[*countedStream]struct{}
	// pending are the streams of StreamEarly not answered yet: cut with
	// the session, but not counted as cut by a tunnel drop, after which
	// they are opened again (EarlyStream.again).
	pending map[*countedStream]struct{}

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

// StreamEarly opens one connection to the session's service as Stream
// does, but returns once the stream's header has left, without waiting for
// the connector's answer: what the person's client sent first (an HTTP
// request, an echo) travels right behind the header, and the answer comes
// back with the service's first bytes, one round trip through the tunnel
// sooner. first, what the client has sent already, goes in the header's
// own frame (one packet); it is written as if by Write. Answer (or the
// first Read) waits for the answer.
//
// If the device's tunnel drops before the answer, the stream is opened
// again through its next tunnel, as Stream does, and what was written so
// far (up to earlyKeep bytes; past that the stream ends with the tunnel)
// is written again.
func (s *Session) StreamEarly(ctx context.Context, first []byte) (*EarlyStream, error) {
	if len(first) > earlyKeep {
		return nil, fmt.Errorf("stream early: %d first bytes, at most %d", len(first), earlyKeep)
	}
	if s.remote != nil {
		st, err := s.remote.Stream(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := st.Write(first); err != nil {
			st.Close()
			return nil, err
		}
		e := &EarlyStream{cs: st}
		e.answered.Store(true)
		return e, nil
	}
	if err := s.usable(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(streamOpenTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	e := &EarlyStream{s: s, deadline: deadline, pending: int64(len(first))}
	if len(first) > 0 {
		e.early = append([]byte(nil), first...)
	}
	if err := e.send(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// usable fails if s can open no more streams: ended, or past its grant.
func (s *Session) usable() error {
	if r := s.Reason(); r != "" {
		return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session has ended (%s)", r)
	}
	if !s.m.cfg.Now().Before(s.grantEnd) {
		s.m.end(s, fieldpass.EndGrantExpired, true)
		return fieldpass.Errorf(fieldpass.EEXPIRED, "grant expired")
	}
	return nil
}

// earlyKeep bounds what an EarlyStream keeps of the bytes written before
// the connector's answer, to write them again should the tunnel drop.
const earlyKeep = 64 << 10

// EarlyStream is a connection to a session's service opened by
// StreamEarly, counted on the session. Writes go out at once; reads wait
// for the connector's answer. Close and CloseWrite are as Stream's.
type EarlyStream struct {
	s        *Session
	deadline time.Time // for the answer, and for waiting on a tunnel

	// answered: Answer is done, err is its result, and cs stays as is.
	answered atomic.Bool
	amu      sync.Mutex // serialises Answer
	err      error

	wmu sync.Mutex // guards what follows while not answered
	cs  tunnel.HalfCloser
	ds  *deviceStream // the stream under cs (nil for a remote session)
	// early holds what was written before the answer, unless overflow;
	// pending counts it, for the session's books once the answer is ok;
	// fin: CloseWrite was called; closed: Close was.
	early       []byte
	overflow    bool
	pending     int64
	fin, closed bool
}

// send opens the stream through the device's tunnel of the moment (waiting
// for one while the device is away) and writes its header and, in the same
// frame, what was written so far (early). The caller holds wmu, or e is
// not shared yet.
func (e *EarlyStream) send(ctx context.Context) error {
	s := e.s
	ctx, cancel := context.WithDeadline(ctx, e.deadline)
	defer cancel()
	for {
		ys, err := s.tunnel(ctx)
		if err != nil {
			return err
		}
		st, err := sendStreamHeader(ctx, ys, s.rec.Device, s.rec.Service, s.tid, e.early)
		if err != nil {
			if ys.IsClosed() && ctx.Err() == nil {
				continue
			}
			return err
		}
		ds := &deviceStream{Stream: st, ys: ys}
		cs := &countedStream{HalfCloser: ds, s: s, ys: ys}
		s.mu.Lock()
		if s.reason != "" {
			r := s.reason
			s.mu.Unlock()
			cs.cut()
			return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session has ended (%s)", r)
		}
		// Listed at once, so that the session's end cuts it even before
		// the answer.
		if s.pending == nil {
			s.pending = map[*countedStream]struct{}{}
		}
		s.pending[cs] = struct{}{}
		s.lastOpen = time.Now()
		s.mu.Unlock()
		e.cs, e.ds = cs, ds
		return nil
	}
}

// Answer waits for the connector's answer: nil once it has dialled the
// service, else why not, as Stream says it; the stream is closed then.
func (e *EarlyStream) Answer() error {
	if e.answered.Load() {
		return e.err
	}
	e.amu.Lock()
	defer e.amu.Unlock()
	if e.answered.Load() {
		return e.err
	}
	err := e.answer()
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if err == nil && e.pending > 0 {
		// Counted now that they reach the service: a refused stream's
		// bytes never did.
		e.s.in.Add(e.pending)
		e.s.m.cfg.Metrics.BytesIn(int(e.pending))
	}
	e.early, e.pending = nil, 0
	e.err = err
	e.answered.Store(true)
	return err
}

func (e *EarlyStream) answer() error {
	s := e.s
	for {
		status, err := tunnel.ReadStreamStatus(e.ds.Stream)
		if err != nil {
			if e.ds.ys.IsClosed() && time.Now().Before(e.deadline) {
				// The tunnel dropped under the open: open it again
				// through the next one, with what was written so far.
				retried, rerr := e.again()
				if rerr != nil {
					return rerr
				}
				if retried {
					continue
				}
			}
			cs := e.cs.(*countedStream)
			s.mu.Lock()
			if _, ok := s.pending[cs]; ok {
				delete(s.pending, cs)
				if cs.ys.IsClosed() {
					// In flight when its tunnel dropped, and not opened
					// again: what it carried may have reached the
					// service.
					s.cut++
					s.lastCut = time.Now()
				}
			}
			s.mu.Unlock()
			cs.Close()
			return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s did not answer: %w", s.rec.Device, err)
		}
		if err := statusError(s.rec.Device, s.rec.Service, status); err != nil {
			var refused *serviceRefusal
			if errors.As(err, &refused) {
				s.mu.Lock()
				if s.dialErr == "" {
					s.dialErr = refused.status.Code.String() + ": " + refused.status.Reason
				}
				s.mu.Unlock()
			}
			e.unlist()
			e.cs.Close()
			return err
		}
		e.ds.resets.Store(status.Resets)
		e.ds.Stream.SetReadDeadline(time.Time{})
		s.m.noteBack(s, e.ds.ys)
		cs := e.cs.(*countedStream)
		s.mu.Lock()
		s.reached = true
		r := s.reason
		if _, ok := s.pending[cs]; ok && r == "" {
			delete(s.pending, cs)
			s.streams[cs] = struct{}{}
		}
		s.mu.Unlock()
		if r != "" {
			e.cs.(*countedStream).cut()
			return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session has ended (%s)", r)
		}
		e.wmu.Lock()
		closed := e.closed
		e.wmu.Unlock()
		if closed {
			// Closed before the answer: now that it is known whether
			// the connector takes a Reset, close again to send one.
			e.cs.Close()
			return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "stream closed")
		}
		return nil
	}
}

// unlist takes the stream off the session's pending list.
func (e *EarlyStream) unlist() {
	e.s.mu.Lock()
	delete(e.s.pending, e.cs.(*countedStream))
	e.s.mu.Unlock()
}

// again opens the stream anew after its tunnel dropped before the answer
// and writes again what was written; false if it cannot (too much was
// written, or the stream was closed), with an error if the device did not
// come back in time.
func (e *EarlyStream) again() (bool, error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if e.overflow || e.closed {
		return false, nil
	}
	// Not a stream cut in flight: it is opened again, with all of it.
	old := e.cs.(*countedStream)
	e.s.mu.Lock()
	delete(e.s.pending, old)
	e.s.mu.Unlock()
	old.HalfCloser.Close()
	if err := e.send(context.Background()); err != nil {
		return false, err
	}
	if e.fin {
		e.ds.Stream.Close()
	}
	return true, nil
}

// Read reads the service's bytes, once the connector has answered.
func (e *EarlyStream) Read(p []byte) (int, error) {
	if err := e.Answer(); err != nil {
		return 0, err
	}
	return e.cs.Read(p)
}

// Write sends p to the service; before the answer it also keeps a copy
// (up to earlyKeep) to send again through the next tunnel should this one
// drop.
func (e *EarlyStream) Write(p []byte) (int, error) {
	if e.answered.Load() {
		return e.cs.Write(p)
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if e.answered.Load() {
		return e.cs.Write(p)
	}
	// Uncounted until the answer says the service was reached.
	n, err := e.ds.Write(p)
	e.pending += int64(n)
	if !e.overflow {
		if len(e.early)+len(p) > earlyKeep {
			e.overflow, e.early = true, nil
		} else if err != nil && e.ds.ys.IsClosed() {
			// Sent again with the rest once the tunnel is back.
			e.early = append(e.early, p...)
			e.pending += int64(len(p) - n)
			return len(p), nil
		} else {
			e.early = append(e.early, p[:n]...)
		}
	}
	return n, err
}

// CloseWrite sends FIN (again through the next tunnel, should this one
// drop before the answer).
func (e *EarlyStream) CloseWrite() error {
	e.wmu.Lock()
	e.fin = true
	cs := e.cs
	e.wmu.Unlock()
	return cs.CloseWrite()
}

// Close closes the stream both ways. Before the answer, the connector is
// sent a Reset as well once its answer says it takes one.
func (e *EarlyStream) Close() error {
	e.wmu.Lock()
	e.closed = true
	cs := e.cs
	e.wmu.Unlock()
	return cs.Close()
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
	streams, pending, timer := s.streams, s.pending, s.timer
	s.streams, s.pending = nil, nil
	s.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	close(s.done)
	for cs := range streams {
		cs.cut()
	}
	for cs := range pending {
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
