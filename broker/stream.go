package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
)

// OpenStream opens a stream to service on the named device and returns it
// once the connector has dialled the service. The caller must have
// authorised the session and committed its record first: this is where bytes
// start to flow.
func (b *Broker) OpenStream(ctx context.Context, device, service string, session tunnel.ID) (tunnel.HalfCloser, error) {
	if err := fieldpass.ValidateServiceName(service); err != nil {
		return nil, err
	}
	b.mu.Lock()
	p := b.byName[device]
	var sess *yamux.Session
	if p != nil {
		sess = p.sess
	}
	b.mu.Unlock()
	if p == nil {
		return nil, b.whyUnreachable(ctx, device)
	}
	if sess == nil {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s is offline", device)
	}
	return openStream(ctx, sess, device, service, session)
}

// openStream opens a stream to service over ys, the named device's tunnel,
// and returns it once the connector has dialled the service. A recorded
// Session opens its streams here on the tunnel it was opened on, so none
// outlives that tunnel.
func openStream(ctx context.Context, ys *yamux.Session, device, service string, session tunnel.ID) (tunnel.HalfCloser, error) {
	st, err := sendStreamHeader(ctx, ys, device, service, session, nil)
	if err != nil {
		return nil, err
	}
	status, err := tunnel.ReadStreamStatus(st)
	if err != nil {
		st.Close()
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s did not answer: %w", device, err)
	}
	if err := statusError(device, service, status); err != nil {
		st.Close()
		return nil, err
	}
	st.SetReadDeadline(time.Time{})
	ds := &deviceStream{Stream: st, ys: ys}
	ds.resets.Store(status.Resets)
	return ds, nil
}

// sendStreamHeader opens a stream to service over ys and writes its
// header, and first (the client's first bytes) in the same frame; the
// connector's answer is still to be read, within the read deadline it sets
// (15 s, or ctx's deadline if sooner). Bytes written behind the header
// wait in the stream at the connector, which reads exactly the header,
// until the service is dialled.
func sendStreamHeader(ctx context.Context, ys *yamux.Session, device, service string, session tunnel.ID, first []byte) (*yamux.Stream, error) {
	st, err := ys.OpenStream()
	if err != nil {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s is offline (open stream: %w)", device, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	st.SetDeadline(deadline)
	b, err := tunnel.AppendStreamHeader(make([]byte, 0, 20+len(service)+len(first)), tunnel.StreamHeader{SessionID: session, Service: service})
	if err == nil {
		_, err = st.Write(append(b, first...))
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("open stream to %s: %w", device, err)
	}
	st.SetWriteDeadline(time.Time{})
	return st, nil
}

// statusError is the error for a connector's answer that is not ok.
func statusError(device, service string, status tunnel.StreamStatus) error {
	switch status.Code {
	case tunnel.StatusOK:
		return nil
	case tunnel.StatusUnknownService:
		// The broker's own words, not the connector's: older connectors
		// list every service the device exposes.
		refusal := &serviceRefusal{tunnel.StreamStatus{Code: status.Code, Reason: fmt.Sprintf("service %q is not exposed by this device", service)}}
		return fieldpass.Errorf(fieldpass.ENOTFOUND, "device %s: %w", device, refusal)
	default:
		return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s: %s: %w", device, status.Code, &serviceRefusal{status})
	}
}

// whyUnreachable explains why a device is not among the peers.
func (b *Broker) whyUnreachable(ctx context.Context, name string) error {
	d, err := b.db.Device(ctx, name)
	if err != nil {
		return err
	}
	if d.State != fieldpass.DeviceActive {
		return fieldpass.Errorf(fieldpass.EFORBIDDEN, "device %s is %s", name, d.State)
	}
	return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s is offline", name)
}

// Connected reports whether the named device has a live session.
func (b *Broker) Connected(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.byName[name]
	return p != nil && p.sess != nil
}

// serviceRefusal is the connector's answer that it could not reach the
// service (unknown to it, or its dial failed): the session then never
// reached the device's service, which its end reason says (dial_failed).
type serviceRefusal struct{ status tunnel.StreamStatus }

func (e *serviceRefusal) Error() string { return e.status.Reason }

// deviceStream is a stream to a device's service. Its Close drops the
// stream at both ends: yamux's Close is only a half-close (FIN), and a
// device's service that keeps sending after the person's side is gone (a
// log tail, a download) would hold the connector's side open until the
// service stopped or yamux's close timeout (5 min) passed. So when the
// device's side has not ended, Close also sends the connector a Reset
// naming the stream, if the connector promised to honour one, and the
// connector closes its connection to the service at once. CloseWrite stays
// a half-close.
type deviceStream struct {
	*yamux.Stream
	ys *yamux.Session
	// resets: the connector's answer promised to honour a Reset; set
	// once it is read, which for an early stream may be after a Close.
	resets atomic.Bool
	// ended: a read returned EOF, the device's side finished cleanly.
	ended atomic.Bool
	once  sync.Once
}

func (s *deviceStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if errors.Is(err, io.EOF) {
		s.ended.Store(true)
	}
	return n, err
}

// CloseWrite sends FIN; the stream is gone once the other side closes too.
func (s *deviceStream) CloseWrite() error { return s.Stream.Close() }

// Close closes the stream both ways, resetting the device's side if it
// has not ended.
func (s *deviceStream) Close() error {
	if s.resets.Load() && !s.ended.Load() {
		s.once.Do(func() { go sendReset(s.ys, s.Stream.StreamID()) })
	}
	return s.Stream.Close()
}

// resetTimeout bounds sending one Reset: past it the device is gone or
// stuck, and its streams end with its tunnel.
const resetTimeout = 15 * time.Second

// sendReset asks the connector, on a stream of its own, to drop stream id
// (tunnel.Reset). The connector answers nothing and closes; reading to
// that close frees the stream at both ends.
func sendReset(ys *yamux.Session, id uint32) {
	st, err := ys.OpenStream()
	if err != nil {
		return // the tunnel is gone, and the stream with it
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(resetTimeout))
	if tunnel.WriteReset(st, tunnel.Reset{StreamID: id}) != nil {
		return
	}
	st.Close()
	io.Copy(io.Discard, io.LimitReader(st, 512))
}
