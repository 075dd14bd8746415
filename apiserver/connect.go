package apiserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/ratelimit"
	"github.com/fieldpass/fieldpass/tunnel"
)

// The connect endpoint (httpapi.ConnectPath) carries one recorded session over a
// WebSocket:
//
//  1. GET ConnectPath?device=D&service=S with the token in the Authorization
//     header and the subprotocol httpapi.ConnectSubprotocol. The broker checks the
//     caller, a live grant and the device, and commits the session row
//     (Sessions.Open) before it upgrades: a refusal is an ordinary JSON
//     error (403 no grant, disabled, or a device whose labels need an MFA
//     login the caller's lacks; 410 grant expired; 404 no such device; 503
//     device offline or audit store down) and opens nothing.
//  2. The WebSocket's binary messages carry a yamux session
//     (tunnel.YamuxConfig); the client opens one stream per connection to
//     the service. The broker answers each with a tunnel.StreamStatus (ok,
//     or why it could not reach the service) before any other byte, as the
//     connector does to the broker. A client may write before the answer:
//     the bytes go on to the device at once, behind the stream's header,
//     and wait there until the service is reached.
//  3. When the broker ends the session (grant expired or revoked, user or
//     device disabled, an admin, idle), it closes the WebSocket with
//     httpapi.ConnectCloseCode and the end reason ("grant_expired") as the close
//     text. A client that closes the WebSocket ends it as client_closed.
//
// The CLI asks instead for the raw transport (httpapi.ConnectUpgrade): the
// same checks, then 101 Switching Protocols and yamux straight on the
// connection, which spares every frame the WebSocket's framing, masking and
// extra writes. The end reason then travels on a stream the broker opens
// (see httpapi.ConnectUpgrade), and yamux's pings stand in for the
// WebSocket's.
const (
	// connectPing is how often the broker pings the client, so a client
	// that vanished without a word is noticed; it is not session traffic.
	connectPing        = 30 * time.Second
	connectPingTimeout = 20 * time.Second
	// connectStreamOpen bounds opening one stream to the device.
	connectStreamOpen = 20 * time.Second
)

func (s *Server) handleConnect() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		if c == nil {
			s.writeError(w, r, fieldpass.Errorf(fieldpass.EFORBIDDEN, "not logged in"))
			return
		}
		if s.cfg.Sessions == nil {
			s.writeError(w, r, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "this broker does not carry sessions"))
			return
		}
		q := r.URL.Query()
		device, service := q.Get("device"), q.Get("service")
		if device == "" || service == "" {
			s.writeError(w, r, fieldpass.Errorf(fieldpass.EINVALID, "want ?device=NAME&service=NAME"))
			return
		}
		// Everything that would make the upgrade fail is checked before
		// the session is opened, so a refused upgrade records nothing.
		raw := headerHasToken(r.Header, "Upgrade", httpapi.ConnectUpgrade) && headerHasToken(r.Header, "Connection", "upgrade") && r.ProtoMajor == 1
		if !raw && (!headerHasToken(r.Header, "Upgrade", "websocket") || !headerHasToken(r.Header, "Sec-WebSocket-Protocol", httpapi.ConnectSubprotocol)) {
			s.writeError(w, r, fieldpass.Errorf(fieldpass.EINVALID, "want a WebSocket upgrade with subprotocol %s", httpapi.ConnectSubprotocol))
			return
		}
		originPatterns, ok := s.connectOrigin(r)
		if !ok {
			s.writeError(w, r, fieldpass.Errorf(fieldpass.EFORBIDDEN, "cross-origin connect refused"))
			return
		}

		// The session manager decides on everything the login proved; the
		// portal is what knows whether it asserted MFA. A copy: the caller
		// in the request's context is shared.
		caller := *c
		caller.MFA = s.portal.MFAAsserted(r.Context(), c.Token)
		sess, err := s.cfg.Sessions.Open(r.Context(), &caller, device, service, ratelimit.ClientAddr(r))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		// The server's read and write timeouts would cut a session that
		// outlives them: the connection outlives the request.
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Time{})
		rc.SetWriteDeadline(time.Time{})
		if raw {
			leg, err := upgradeRaw(w, rc)
			if err != nil {
				s.log.Info("connect upgrade failed", "session", sess.ID(), "err", err)
				sess.End(fieldpass.EndError)
				return
			}
			s.log.Debug("connect upgraded", "session", sess.ID(), "transport", httpapi.ConnectUpgrade)
			s.carry(leg, sess)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:   []string{httpapi.ConnectSubprotocol},
			OriginPatterns: originPatterns,
		})
		if err != nil {
			sess.End(fieldpass.EndError)
			return
		}
		if ws.Subprotocol() != httpapi.ConnectSubprotocol {
			ws.Close(websocket.StatusPolicyViolation, "subprotocol "+httpapi.ConnectSubprotocol+" required")
			sess.End(fieldpass.EndError)
			return
		}
		s.carry(newWSLeg(ws), sess)
	}
}

// connectOrigin checks a browser's Origin: only the broker's own origin
// (PublicURL, or the request's host when none is configured) may open a
// session with the portal's cookie. No Origin (the CLI) is fine. It returns
// the patterns the WebSocket library should accept too.
func (s *Server) connectOrigin(r *http.Request) ([]string, bool) {
	var patterns []string
	var pu *url.URL
	if s.cfg.PublicURL != "" {
		if u, err := url.Parse(s.cfg.PublicURL); err == nil && u.Host != "" {
			pu = u
			patterns = []string{u.Host}
		}
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return patterns, true
	}
	o, err := url.Parse(origin)
	if err != nil || o.Host == "" {
		return nil, false
	}
	if pu != nil {
		return patterns, strings.EqualFold(o.Scheme, pu.Scheme) && strings.EqualFold(o.Host, pu.Host)
	}
	return patterns, strings.EqualFold(o.Host, r.Host)
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// connectLeg is the connection between the client and the broker that
// carries the session's yamux: a WebSocket (browsers, older CLIs) or the
// raw upgraded connection (httpapi.ConnectUpgrade).
type connectLeg interface {
	// server starts the broker's side of the yamux session.
	server() (*yamux.Session, error)
	// watch runs until the session ends or stop is closed, checking that
	// the client is still there; it closes ys if not.
	watch(ys *yamux.Session, stop <-chan struct{}, log *slog.Logger)
	// endWith tells the client why the broker ended the session, then
	// closes ys and the connection.
	endWith(ys *yamux.Session, reason string)
	// close closes the connection after the client went away.
	close()
	closeNow()
}

// carry runs the yamux session over leg until the client goes away or the
// broker ends the session, then records the end.
func (s *Server) carry(leg connectLeg, sess *broker.Session) {
	// The request's context is not to be used past the upgrade.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ys, err := leg.server()
	if err != nil {
		leg.closeNow()
		sess.End(fieldpass.EndError)
		return
	}
	log := s.log.With("session", sess.ID())

	ended := make(chan struct{})
	go func() {
		select {
		case <-sess.Done():
			// The reason goes first, so the client can say it.
			leg.endWith(ys, string(sess.Reason()))
		case <-ended:
		}
	}()
	go leg.watch(ys, ended, log)

	var wg sync.WaitGroup
	// slots bounds the streams carried at once: each is a connection the
	// device opens to its service, and a grant is no licence to flood it.
	slots := make(chan struct{}, s.cfg.MaxStreamsPerSession)
	for {
		st, err := ys.AcceptStream()
		if err != nil {
			break
		}
		select {
		case slots <- struct{}{}:
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				refuseStream(st, fmt.Sprintf("too many streams in this session: at most %d at once (the broker's --max-streams-per-session): close one first", s.cfg.MaxStreamsPerSession))
			}()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			s.carryStream(ctx, sess, st)
		}()
	}
	close(ended)
	ys.Close()
	// Every stream's bytes are counted once its copies are done.
	wg.Wait()
	sess.End(fieldpass.EndClientClosed)
	leg.close()
}

// wsLeg is the WebSocket leg: yamux in binary messages, the end reason in
// the close frame, pings to notice a client that vanished.
type wsLeg struct {
	ws     *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
}

func newWSLeg(ws *websocket.Conn) *wsLeg {
	ctx, cancel := context.WithCancel(context.Background())
	return &wsLeg{ws: ws, ctx: ctx, cancel: cancel}
}

func (l *wsLeg) server() (*yamux.Session, error) {
	nc := websocket.NetConn(l.ctx, l.ws, websocket.MessageBinary)
	l.ws.SetReadLimit(httpapi.ConnectReadLimit) // NetConn lifts the limit; put one back
	return yamux.Server(nc, tunnel.YamuxConfig(0))
}

func (l *wsLeg) watch(ys *yamux.Session, stop <-chan struct{}, log *slog.Logger) {
	t := time.NewTicker(connectPing)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ys.CloseChan():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(l.ctx, connectPingTimeout)
			err := l.ws.Ping(pctx)
			cancel()
			if err != nil {
				log.Info("connect client stopped answering pings", "err", err)
				ys.Close()
				l.ws.CloseNow()
				return
			}
		}
	}
}

func (l *wsLeg) endWith(ys *yamux.Session, reason string) {
	l.ws.Close(httpapi.ConnectCloseCode, reason)
	ys.Close()
}

func (l *wsLeg) close() {
	l.ws.Close(websocket.StatusNormalClosure, "")
	l.cancel()
}

func (l *wsLeg) closeNow() {
	l.ws.CloseNow()
	l.cancel()
}

// rawLeg is the upgraded connection itself (httpapi.ConnectUpgrade): yamux
// straight on TLS or TCP, yamux's own pings, the end reason on a stream of
// the broker's.
type rawLeg struct{ conn net.Conn }

// connectReasonWait bounds how long the broker waits for a client to take
// the end reason before it closes the connection anyway.
const connectReasonWait = 2 * time.Second

// upgradeRaw switches the request's connection to the raw transport.
func upgradeRaw(w http.ResponseWriter, rc *http.ResponseController) (*rawLeg, error) {
	w.Header().Set("Connection", "Upgrade")
	w.Header().Set("Upgrade", httpapi.ConnectUpgrade)
	w.WriteHeader(http.StatusSwitchingProtocols)
	conn, brw, err := rc.Hijack()
	if err != nil {
		return nil, fmt.Errorf("hijack: %w", err)
	}
	if err := brw.Flush(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write 101: %w", err)
	}
	conn.SetDeadline(time.Time{})
	if brw.Reader.Buffered() > 0 {
		// The client did not wait for our answer.
		return &rawLeg{conn: bufferedConn{Conn: conn, r: brw.Reader}}, nil
	}
	return &rawLeg{conn: conn}, nil
}

func (l *rawLeg) server() (*yamux.Session, error) {
	cfg := tunnel.YamuxConfig(0)
	// A client that vanished without a word is noticed by yamux's pings,
	// as the WebSocket's pings do on the other leg.
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = connectPing
	// As httpapi.RawConnectConn, and a client stream's acceptance waits
	// (up to tunnel.OpenHold) to leave with the broker's answer to it.
	return yamux.Server(tunnel.CoalesceFrames(l.conn, tunnel.OpenHold), cfg)
}

func (l *rawLeg) watch(ys *yamux.Session, stop <-chan struct{}, log *slog.Logger) {}

func (l *rawLeg) endWith(ys *yamux.Session, reason string) {
	if st, err := ys.OpenStream(); err == nil {
		st.SetDeadline(time.Now().Add(connectReasonWait))
		if len(reason) > httpapi.ConnectReasonMax {
			reason = reason[:httpapi.ConnectReasonMax]
		}
		st.Write([]byte(reason))
		st.Close()
		// The client closes its side once it holds the reason.
		io.Copy(io.Discard, st)
	}
	ys.Close()
	l.conn.Close()
}

func (l *rawLeg) close()    { l.conn.Close() }
func (l *rawLeg) closeNow() { l.conn.Close() }

// bufferedConn reads what the HTTP server had already buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// carryStream joins one client stream to a new stream to the device,
// answering the client first with a status. The client's bytes go to the
// device as they come, right behind the stream's header, without waiting
// for the connector's answer (broker.Session.StreamEarly): a client that
// speaks first has its request at the service a round trip sooner. The
// device's bytes are passed on once the answer has gone to the client.
func (s *Server) carryStream(ctx context.Context, sess *broker.Session, st *yamux.Stream) {
	// What the client has sent already (on the raw transport the CLI
	// sends a stream's opening and its first bytes together) goes in the
	// device stream's first frame, with the header: one packet through
	// the tunnel, not two.
	buf := firstBufs.Get()
	st.SetReadDeadline(time.Now())
	n, _ := st.Read(*buf)
	st.SetReadDeadline(time.Time{})
	octx, cancel := context.WithTimeout(ctx, connectStreamOpen)
	ds, err := sess.StreamEarly(octx, (*buf)[:n])
	cancel()
	firstBufs.Put(buf)
	if err != nil {
		refuseOpen(st, err)
		return
	}
	client := tunnel.YamuxStream{Stream: st}
	up := make(chan struct{})
	go func() {
		defer close(up)
		copyHalf(ds, client)
	}()
	if err := ds.Answer(); err != nil {
		refuseOpen(st, err)
		// The client's side is answered: stop reading what it sends.
		st.SetReadDeadline(time.Now())
		<-up
		return
	}
	if err := tunnel.WriteStreamStatus(st, tunnel.StreamStatus{Code: tunnel.StatusOK}); err != nil {
		ds.Close()
		st.Close()
		<-up
		return
	}
	copyHalf(client, ds)
	<-up
	client.Close()
	ds.Close()
}

// firstBufs hold what a client sent before its stream was carried.
var firstBufs = tunnel.NewBuffers(2 << 10)

// refuseOpen answers a client stream whose device stream could not be
// opened with why, and closes it.
func refuseOpen(st *yamux.Stream, err error) {
	code := tunnel.StatusDialFailed
	if fieldpass.ErrorCode(err) == fieldpass.ENOTFOUND {
		code = tunnel.StatusUnknownService
	}
	writeStreamStatus(st, code, fieldpass.ErrorMessage(err))
}

// copyBufs are the 64 KiB buffers of join's copies (tunnel.Buffers).
var copyBufs = tunnel.NewBuffers(64 << 10)

// join is tunnel.Join through copyBufs.
func join(a, b tunnel.HalfCloser) { tunnel.JoinWith(a, b, copyBufs) }

// copyHalf is tunnel.CopyHalf through copyBufs.
func copyHalf(dst, src tunnel.HalfCloser) { tunnel.CopyHalf(dst, src, copyBufs) }

// refuseStream answers a client stream the broker will not carry, with
// reason, and closes it.
func refuseStream(st *yamux.Stream, reason string) {
	writeStreamStatus(st, tunnel.StatusDialFailed, reason)
}

// writeStreamStatus answers a client stream with code and reason and
// closes it; a client that does not read it holds nothing for long.
func writeStreamStatus(st *yamux.Stream, code tunnel.StatusCode, reason string) {
	st.SetWriteDeadline(time.Now().Add(5 * time.Second))
	tunnel.WriteStreamStatus(st, tunnel.StreamStatus{Code: code, Reason: reason})
	st.Close()
}
