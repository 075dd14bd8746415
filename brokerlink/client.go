package brokerlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
)

// Dialer keeps one link to each peer broker, dialled on first use and
// again after it breaks.
type Dialer struct {
	tls *tls.Config

	mu    sync.Mutex
	links map[string]*Link // by address
}

// NewDialer dials peers with cfg: the operator's CA in RootCAs and this
// broker's certificate in Certificates.
func NewDialer(cfg *tls.Config) (*Dialer, error) {
	if cfg == nil || len(cfg.Certificates) == 0 && cfg.GetClientCertificate == nil {
		return nil, errors.New("brokerlink: the dialer's TLS config needs this broker's certificate")
	}
	cfg = cfg.Clone()
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{alpn}
	return &Dialer{tls: cfg, links: map[string]*Link{}}, nil
}

// Link returns the live link to the broker at addr (host:port), dialling
// it if there is none.
func (d *Dialer) Link(ctx context.Context, addr string) (*Link, error) {
	d.mu.Lock()
	l := d.links[addr]
	d.mu.Unlock()
	if l != nil && !l.ys.IsClosed() {
		return l, nil
	}
	l, err := dial(ctx, addr, d.tls)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if cur := d.links[addr]; cur != nil && !cur.ys.IsClosed() {
		d.mu.Unlock()
		l.Close()
		return cur, nil
	}
	d.links[addr] = l
	d.mu.Unlock()
	return l, nil
}

// Close closes every link.
func (d *Dialer) Close() {
	d.mu.Lock()
	links := d.links
	d.links = map[string]*Link{}
	d.mu.Unlock()
	for _, l := range links {
		l.Close()
	}
}

// Link is one link to a peer broker.
type Link struct {
	ys *yamux.Session
}

func dial(ctx context.Context, addr string, cfg *tls.Config) (*Link, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("brokerlink: peer address %q: %w", addr, err)
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	td := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}}
	c, err := td.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "cannot reach broker %s: %v", addr, err)
	}
	ys, err := yamux.Client(c, linkYamuxConfig())
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Link{ys: ys}, nil
}

// Close closes the link; the holder ends the sessions opened over it.
func (l *Link) Close() error { return l.ys.Close() }

// Open asks the holder to open a session for req.
func (l *Link) Open(ctx context.Context, req OpenRequest) (*Remote, error) {
	st, a, err := l.ask(ctx, request{Op: "open", OpenRequest: req})
	if err != nil {
		return nil, err
	}
	if a.Session == nil {
		st.Close()
		return nil, fieldpass.Errorf(fieldpass.EINTERNAL, "the device's broker answered no session")
	}
	r := &Remote{l: l, ctl: st, rec: *a.Session, grantEnd: a.GrantEnd, done: make(chan struct{})}
	go r.watch()
	return r, nil
}

// End asks the broker at the other end of l, which holds session id, to
// end it with reason now, and returns the row as it recorded the end.
func (l *Link) End(ctx context.Context, id string, reason fieldpass.EndReason) (*fieldpass.Session, error) {
	st, a, err := l.ask(ctx, request{Op: "end", Session: id, Reason: string(reason)})
	if err != nil {
		return nil, err
	}
	st.Close()
	if a.Session == nil {
		return nil, fieldpass.Errorf(fieldpass.EINTERNAL, "the session's broker answered no session")
	}
	return a.Session, nil
}

// ask opens a stream on l, sends req and reads the holder's answer, within
// ctx's deadline; a refusal is returned as the holder's error, and the
// stream is closed on every error.
func (l *Link) ask(ctx context.Context, req request) (*yamux.Stream, answer, error) {
	var a answer
	st, err := l.ys.OpenStream()
	if err != nil {
		return nil, a, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "link to the device's broker: %v", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	if err := writeFrame(st, req); err == nil {
		err = readFrame(st, &a)
	}
	if err != nil {
		st.Close()
		return nil, a, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "link to the device's broker: %v", err)
	}
	st.SetDeadline(time.Time{})
	if a.Error != nil {
		st.Close()
		return nil, a, fromWire(a.Error)
	}
	return st, a, nil
}

// Remote is a session the holder keeps, seen from the serving broker. It
// has the methods of the holder's Session.
type Remote struct {
	l        *Link
	ctl      *yamux.Stream
	rec      fieldpass.Session
	grantEnd time.Time
	done     chan struct{}

	mu     sync.Mutex
	reason fieldpass.EndReason
}

func (r *Remote) watch() {
	var c control
	err := readFrame(r.ctl, &c)
	reason := fieldpass.EndReason(c.Ended)
	if err != nil || fieldpass.ValidateEndReason(reason) != nil {
		// The link broke: the broker holding the device is gone (or
		// cut off), and the device's tunnel with it, as far as this
		// session can tell. The holder, if alive, ends its row as
		// client_closed; a dead one's is ended by the fleet's janitor.
		reason = fieldpass.EndDeviceClosed
	}
	r.finish(reason)
}

func (r *Remote) finish(reason fieldpass.EndReason) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reason != "" {
		return false
	}
	r.reason = reason
	close(r.done)
	return true
}

// ID is the session's id (its row's, at the holder).
func (r *Remote) ID() string { return r.rec.ID }

// Record is the session's row as the holder opened it.
func (r *Remote) Record() fieldpass.Session { return r.rec }

// GrantEnd is when the grant that lets the session through ends.
func (r *Remote) GrantEnd() time.Time { return r.grantEnd }

// Done is closed when the session ends, at either broker.
func (r *Remote) Done() <-chan struct{} { return r.done }

// Reason says why the session ended ("" while live).
func (r *Remote) Reason() fieldpass.EndReason {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reason
}

// End ends the session from the person's side.
func (r *Remote) End(reason fieldpass.EndReason) {
	if !r.finish(reason) {
		return
	}
	writeFrame(r.ctl, control{End: string(reason)})
	r.ctl.Close()
}

// Stream opens one connection to the session's service through the holder.
func (r *Remote) Stream(ctx context.Context) (tunnel.HalfCloser, error) {
	if reason := r.Reason(); reason != "" {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session has ended (%s)", reason)
	}
	return streamOn(ctx, r.l, r.rec.ID)
}

// streamOn asks the holder at the other end of l for a stream of session
// id.
func streamOn(ctx context.Context, l *Link, id string) (tunnel.HalfCloser, error) {
	st, _, err := l.ask(ctx, request{Op: "stream", Session: id})
	if err != nil {
		return nil, err
	}
	return tunnel.YamuxStream{Stream: st}, nil
}
