package brokerlink

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
)

// Session is a live session as the holder keeps it (*broker.Session is
// one).
type Session interface {
	ID() string
	Record() fieldpass.Session
	GrantEnd() time.Time
	Done() <-chan struct{}
	Reason() fieldpass.EndReason
	End(reason fieldpass.EndReason)
	Stream(ctx context.Context) (tunnel.HalfCloser, error)
}

// Holder opens sessions on the devices this broker holds, for people whose
// connect reached another broker.
type Holder interface {
	OpenFor(ctx context.Context, req OpenRequest) (Session, error)
}

// Ender ends, for an admin whose request reached another broker, a
// session this broker holds (*broker.Sessions is one). A Holder that is
// also an Ender answers the link's end requests; other Holders answer
// them unsupported.
type Ender interface {
	// EndHeld ends the live session id with reason and records the end,
	// returning the ended row; a session not live here is not_found.
	EndHeld(ctx context.Context, id string, reason fieldpass.EndReason) (*fieldpass.Session, error)
}

// Server accepts links from the other brokers of the fleet.
type Server struct {
	holder Holder
	tls    *tls.Config
	log    *slog.Logger
	// OpenTimeout bounds an open request, and an end (default 15 s).
	OpenTimeout time.Duration
}

// NewServer serves links accepted with cfg (it must ask for and verify
// client certificates: tls.RequireAndVerifyClientCert with the operator's
// CA in ClientCAs) with holder.
func NewServer(holder Holder, cfg *tls.Config, log *slog.Logger) (*Server, error) {
	if cfg == nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil {
		return nil, errors.New("brokerlink: the server's TLS config must require and verify client certificates")
	}
	cfg = cfg.Clone()
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{alpn}
	return &Server{holder: holder, tls: cfg, log: log, OpenTimeout: 15 * time.Second}, nil
}

// alpn names the link's protocol in the TLS handshake, so a link cannot be
// mistaken for HTTPS on a shared port.
const alpn = "fieldpass-brokerlink/1"

// Serve accepts links on ln until ctx ends or ln fails.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go s.serveLink(ctx, tls.Server(c, s.tls))
	}
}

// link is one accepted link and the sessions opened over it.
type link struct {
	peer string
	mu   sync.Mutex
	open map[string]Session
}

func (s *Server) serveLink(ctx context.Context, c *tls.Conn) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := c.HandshakeContext(hctx)
	cancel()
	if err != nil {
		s.log.Warn("brokerlink: handshake", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	st := c.ConnectionState()
	l := &link{peer: st.PeerCertificates[0].Subject.CommonName, open: map[string]Session{}}
	ys, err := yamux.Server(c, linkYamuxConfig())
	if err != nil {
		c.Close()
		return
	}
	log := s.log.With("peer", l.peer)
	log.Info("brokerlink: peer linked", "remote", c.RemoteAddr().String())
	defer func() {
		ys.Close()
		// The serving broker is gone: nobody relays these sessions'
		// bytes any more.
		l.mu.Lock()
		open := l.open
		l.open = nil
		l.mu.Unlock()
		for _, sess := range open {
			sess.End(fieldpass.EndClientClosed)
		}
		log.Info("brokerlink: peer gone", "sessions_ended", len(open))
	}()
	for {
		st, err := ys.AcceptStream()
		if err != nil {
			return
		}
		go s.serveStream(ctx, l, st, log)
	}
}

func (s *Server) serveStream(ctx context.Context, l *link, st *yamux.Stream, log *slog.Logger) {
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req request
	if err := readFrame(st, &req); err != nil {
		st.Close()
		return
	}
	st.SetReadDeadline(time.Time{})
	switch req.Op {
	case "open":
		s.serveOpen(ctx, l, st, req.OpenRequest, log)
	case "stream":
		s.serveData(ctx, l, st, req.Session)
	case "end":
		s.serveEnd(ctx, st, req, log)
	default:
		writeFrame(st, answer{Error: &wireError{Code: fieldpass.EINVALID, Message: "unknown request " + req.Op}})
		st.Close()
	}
}

func (s *Server) serveOpen(ctx context.Context, l *link, st *yamux.Stream, req OpenRequest, log *slog.Logger) {
	octx, cancel := context.WithTimeout(ctx, s.OpenTimeout)
	sess, err := s.holder.OpenFor(octx, req)
	cancel()
	if err != nil {
		writeFrame(st, answer{Error: toWire(err)})
		st.Close()
		return
	}
	l.mu.Lock()
	if l.open == nil { // the link broke meanwhile
		l.mu.Unlock()
		sess.End(fieldpass.EndClientClosed)
		st.Close()
		return
	}
	l.open[sess.ID()] = sess
	l.mu.Unlock()
	rec := sess.Record()
	if err := writeFrame(st, answer{Session: &rec, GrantEnd: sess.GrantEnd()}); err != nil {
		sess.End(fieldpass.EndClientClosed)
		st.Close()
		return
	}
	// The control stream: the serving broker's end, or the holder's.
	asked := make(chan fieldpass.EndReason, 1)
	go func() {
		var c control
		if err := readFrame(st, &c); err != nil {
			asked <- fieldpass.EndClientClosed
			return
		}
		asked <- fieldpass.EndReason(c.End)
	}()
	select {
	case r := <-asked:
		sess.End(r)
	case <-sess.Done():
		writeFrame(st, control{Ended: string(sess.Reason())})
	}
	st.Close()
	l.mu.Lock()
	if l.open != nil {
		delete(l.open, sess.ID())
	}
	l.mu.Unlock()
}

func (s *Server) serveEnd(ctx context.Context, st *yamux.Stream, req request, log *slog.Logger) {
	defer st.Close()
	en, ok := s.holder.(Ender)
	if !ok {
		writeFrame(st, answer{Error: &wireError{Code: fieldpass.EINVALID, Message: "this broker does not end sessions over the link"}})
		return
	}
	reason := fieldpass.EndReason(req.Reason)
	if err := fieldpass.ValidateEndReason(reason); err != nil {
		writeFrame(st, answer{Error: toWire(err)})
		return
	}
	ectx, cancel := context.WithTimeout(ctx, s.OpenTimeout)
	rec, err := en.EndHeld(ectx, req.Session, reason)
	cancel()
	if err != nil {
		writeFrame(st, answer{Error: toWire(err)})
		return
	}
	log.Info("brokerlink: session ended at a peer's request", "session", rec.ID, "reason", rec.EndReason)
	writeFrame(st, answer{Session: rec})
}

func (s *Server) serveData(ctx context.Context, l *link, st *yamux.Stream, id string) {
	l.mu.Lock()
	sess := l.open[id]
	l.mu.Unlock()
	if sess == nil {
		writeFrame(st, answer{Error: &wireError{Code: fieldpass.ENOTFOUND, Message: "no session " + id + " on this link"}})
		st.Close()
		return
	}
	dev, err := sess.Stream(ctx)
	if err != nil {
		writeFrame(st, answer{Error: toWire(err)})
		st.Close()
		return
	}
	if err := writeFrame(st, answer{}); err != nil {
		dev.Close()
		st.Close()
		return
	}
	tunnel.Join(tunnel.YamuxStream{Stream: st}, dev)
}

// linkYamuxConfig is yamux for a link between brokers in one site: large
// windows (a fast, short path), keepalives so a dead peer is noticed.
func linkYamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.MaxStreamWindowSize = 4 << 20
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.LogOutput = io.Discard
	return c
}
