package httpapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
)

// ConnectUpgrade is the HTTP upgrade token of the connect endpoint's raw
// transport. A client that sends "Connection: Upgrade" and "Upgrade:
// ConnectUpgrade" (and no WebSocket headers) gets 101 Switching Protocols,
// after which the connection (TLS or TCP) carries the yamux session itself,
// with no WebSocket framing or masking between: the CLI's way. Browsers
// cannot ask for it and keep the WebSocket; a broker that predates it
// answers 400, and the client falls back to the WebSocket.
//
// With no WebSocket close frame to carry it, the broker tells the end
// reason of a session it ends on a stream of its own: it opens one, writes
// the reason (a fieldpass.EndReason, at most ConnectReasonMax bytes) and
// half-closes; the client reads it, closes its side, and only then does the
// broker close the session.
const (
	ConnectUpgrade   = "fieldpass-yamux/1"
	ConnectReasonMax = 64
)

// Conn is one recorded session to a device's service, open through the
// broker's connect endpoint. It carries any number of connections to the
// service (OpenStream), all counted on the one session: opening another
// costs a stream, not a login or a grant check. Safe for concurrent use.
type Conn struct {
	ys *yamux.Session
	// ws is the WebSocket the session runs on, nil on the raw transport.
	ws     *websocket.Conn
	cancel context.CancelFunc

	mu     sync.Mutex // guards reason
	reason string
}

// connectStatusTimeout bounds the wait for the broker's answer to a new
// stream (the broker itself gives the device 20 s).
const connectStatusTimeout = 30 * time.Second

// Connect opens a session to service on device. A refusal is a
// *fieldpass.Error with the broker's reason (no grant, grant expired,
// device offline or disabled, audit store down); nothing is opened then.
// It asks for the raw transport (ConnectUpgrade) and falls back to the
// WebSocket where the broker does not offer it.
func (c *Client) Connect(ctx context.Context, device, service string) (*Conn, error) {
	base, err := fieldpass.ParseBrokerURL(c.BaseURL)
	if err != nil {
		return nil, err
	}
	if c.Token == "" {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "not logged in: run fieldpass login")
	}
	if err := fieldpass.CheckToken(c.Token); err != nil {
		return nil, err
	}
	u := base.JoinPath(ConnectPath)
	u.RawQuery = url.Values{"device": {device}, "service": {service}}.Encode()
	ua := c.UserAgent
	if ua == "" {
		ua = "fieldpass/" + fieldpass.Version
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	header := http.Header{"Authorization": {"Bearer " + c.Token}, "User-Agent": {ua}}
	if conn, err := connectRaw(ctx, hc, u.String(), header, base.Host); err != errNoRawTransport {
		return conn, err
	}
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient:   hc,
		HTTPHeader:   header,
		Subprotocols: []string{ConnectSubprotocol},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil {
			return nil, answerError(base.Host, resp)
		}
		return nil, unreachable(ctx, base.Host, err)
	}
	if ws.Subprotocol() != ConnectSubprotocol {
		ws.CloseNow()
		return nil, fieldpass.Errorf(fieldpass.EINTERNAL, "the broker at %s does not speak %s", base.Host, ConnectSubprotocol)
	}
	cctx, cancel := context.WithCancel(context.Background())
	conn := &Conn{ws: ws, cancel: cancel}
	nc := websocket.NetConn(cctx, ws, websocket.MessageBinary)
	ws.SetReadLimit(ConnectReadLimit)
	ys, err := yamux.Client(reasonConn{Conn: nc, c: conn}, tunnel.YamuxConfig(0))
	if err != nil {
		cancel()
		ws.CloseNow()
		return nil, fieldpass.Errorf(fieldpass.EINTERNAL, "start session: %w", err)
	}
	conn.ys = ys
	go func() {
		<-ys.CloseChan()
		cancel()
	}()
	return conn, nil
}

// errNoRawTransport: the raw transport cannot be had here (a client whose
// transport we cannot keep to HTTP/1.1, or a broker that predates it); use
// the WebSocket.
var errNoRawTransport = errors.New("no raw connect transport")

// connectRaw opens the session on the raw transport (ConnectUpgrade).
func connectRaw(ctx context.Context, hc *http.Client, u string, header http.Header, host string) (*Conn, error) {
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	t, ok := rt.(*http.Transport)
	if !ok {
		return nil, errNoRawTransport
	}
	// An upgrade needs HTTP/1.1: Go's transport would take HTTP/2 for
	// anything but a WebSocket when the server offers it over TLS.
	t = t.Clone()
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	if t.TLSClientConfig != nil {
		t.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	defer t.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header = header.Clone()
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", ConnectUpgrade)
	// No client timeout: the answer's body is the session. ctx bounds the
	// handshake.
	resp, err := (&http.Client{Transport: t, CheckRedirect: hc.CheckRedirect}).Do(req)
	if err != nil {
		return nil, unreachable(ctx, host, err)
	}
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols && headerHasToken(resp.Header, "Upgrade", ConnectUpgrade):
	case resp.StatusCode == http.StatusSwitchingProtocols:
		resp.Body.Close()
		return nil, fieldpass.Errorf(fieldpass.EINTERNAL, "the broker at %s switched to %q, not %s", host, resp.Header.Get("Upgrade"), ConnectUpgrade)
	default:
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e tunnel.ErrorResponse
		if json.Unmarshal(raw, &e) != nil || e.Code == "" ||
			(resp.StatusCode == http.StatusBadRequest && strings.Contains(e.Message, "WebSocket")) {
			// Not the broker's refusal of the session: a broker before the
			// raw transport, which wants a WebSocket and opened nothing, or
			// something in between (a proxy) that passes only WebSocket
			// upgrades.
			return nil, errNoRawTransport
		}
		return nil, &fieldpass.Error{Code: e.Code, Message: e.Message}
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, fieldpass.Errorf(fieldpass.EINTERNAL, "the broker at %s switched protocols, but no connection came with it", host)
	}
	ys, err := yamux.Client(tunnel.CoalesceFrames(rwc, connectOpenHold), tunnel.YamuxConfig(0))
	if err != nil {
		rwc.Close()
		return nil, fieldpass.Errorf(fieldpass.EINTERNAL, "start session: %w", err)
	}
	conn := &Conn{ys: ys, cancel: func() {}}
	go conn.acceptReasons()
	return conn, nil
}

// connectOpenHold is how long a stream's opening waits on the raw
// transport for the frame that follows it (tunnel.CoalesceFrames): a
// forwarded connection's first bytes, when its client speaks first, leave
// with the opening, and the broker can pass them on with the device
// stream's header. A client that waits for the server to speak first
// waits this much longer, once per connection.
const connectOpenHold = 200 * time.Microsecond

// acceptReasons reads the end reason the broker sends on a stream of its
// own before it ends the session (raw transport only).
func (c *Conn) acceptReasons() {
	for {
		st, err := c.ys.AcceptStream()
		if err != nil {
			return
		}
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(io.LimitReader(st, ConnectReasonMax))
		if len(b) > 0 {
			c.mu.Lock()
			c.reason = string(b)
			c.mu.Unlock()
		}
		// Our close tells the broker the reason arrived.
		st.Close()
	}
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// OpenStream opens one connection to the service. Close on it is a
// half-close (it sends FIN and keeps reading), as CloseWrite is; the
// stream is gone once both sides have closed.
func (c *Conn) OpenStream() (tunnel.YamuxStream, error) {
	st, err := c.ys.OpenStream()
	if err != nil {
		return tunnel.YamuxStream{}, c.closedError(err)
	}
	if err := c.readStatus(st); err != nil {
		return tunnel.YamuxStream{}, err
	}
	return tunnel.YamuxStream{Stream: st}, nil
}

// OpenStreamEarly opens one connection to the service without waiting for
// the broker's answer: what is written goes out at once, right behind the
// stream's opening, which saves a round trip through the whole path for
// each connection whose client speaks first. The broker's answer is read
// by the first Read (or Status); a refusal then fails every Read, and what
// was written is dropped with the stream.
func (c *Conn) OpenStreamEarly() (*Stream, error) {
	st, err := c.ys.OpenStream()
	if err != nil {
		return nil, c.closedError(err)
	}
	return &Stream{st: st, c: c}, nil
}

// Stream is a connection to the service opened by OpenStreamEarly. Close
// is a half-close, as CloseWrite is.
type Stream struct {
	st *yamux.Stream
	c  *Conn

	answered atomic.Bool // status has been read; err is final
	mu       sync.Mutex  // serialises reading the status
	err      error
}

// Status waits for the broker's answer to the stream: nil once the
// service was reached, else why not (as OpenStream says it).
func (s *Stream) Status() error {
	if s.answered.Load() {
		return s.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.answered.Load() {
		return s.err
	}
	s.err = s.c.readStatus(s.st)
	s.answered.Store(true)
	return s.err
}

func (s *Stream) Read(p []byte) (int, error) {
	if err := s.Status(); err != nil {
		return 0, err
	}
	return s.st.Read(p)
}

func (s *Stream) Write(p []byte) (int, error) { return s.st.Write(p) }

// CloseWrite sends FIN; the stream is gone once the broker closes too.
func (s *Stream) CloseWrite() error { return s.st.Close() }
func (s *Stream) Close() error      { return s.st.Close() }

// readStatus reads the broker's answer at the start of st and turns a
// refusal into an error; it closes st then.
func (c *Conn) readStatus(st *yamux.Stream) error {
	st.SetReadDeadline(time.Now().Add(connectStatusTimeout))
	status, err := tunnel.ReadStreamStatus(st)
	if err != nil {
		st.Close()
		return c.closedError(err)
	}
	st.SetReadDeadline(time.Time{})
	switch status.Code {
	case tunnel.StatusOK:
		return nil
	case tunnel.StatusUnknownService:
		st.Close()
		return fieldpass.Errorf(fieldpass.ENOTFOUND, "%s", status.Reason)
	default:
		st.Close()
		return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "%s", status.Reason)
	}
}

// closedError explains a failure to open a stream: the session's end
// reason when the broker ended it.
func (c *Conn) closedError(err error) error {
	select {
	case <-c.Done():
		if r := c.Reason(); r != "" {
			return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session ended by the broker: %s", r)
		}
		return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session closed")
	default:
	}
	return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "open stream: %w", err)
}

// Close ends the session (client_closed) and every stream in it.
func (c *Conn) Close() error {
	if c.ws == nil {
		// Raw transport: closing the session closes the connection, which
		// the broker reads as the client's close.
		c.ys.Close()
		return nil
	}
	select {
	case <-c.ys.CloseChan():
		// The session is over (the broker ended it, or the connection
		// broke): no close handshake to wait for.
		c.cancel()
		if err := c.ws.CloseNow(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	default:
	}
	c.ys.Close()
	err := c.ws.Close(websocket.StatusNormalClosure, "")
	c.cancel()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Done is closed when the session is over, whoever ended it.
func (c *Conn) Done() <-chan struct{} { return c.ys.CloseChan() }

// Reason is why the broker ended the session (a fieldpass.EndReason such
// as "grant_expired"), or "" if it did not say (the client closed it, or
// the connection was lost).
func (c *Conn) Reason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// reasonConn keeps the close reason of a WebSocket the broker closed with
// ConnectCloseCode: yamux only sees that the connection ended.
type reasonConn struct {
	net.Conn
	c *Conn
}

func (r reasonConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if err != nil {
		var ce websocket.CloseError
		if errors.As(err, &ce) && ce.Code == ConnectCloseCode {
			r.c.mu.Lock()
			r.c.reason = ce.Reason
			r.c.mu.Unlock()
		}
	}
	return n, err
}
