package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
)

// Conn is one recorded session to a device's service, open through the
// broker's connect endpoint. It carries any number of connections to the
// service (OpenStream), all counted on the one session: opening another
// costs a stream, not a login or a grant check. Safe for concurrent use.
type Conn struct {
	ws     *websocket.Conn
	ys     *yamux.Session
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
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient:   hc,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + c.Token}, "User-Agent": {ua}},
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

// OpenStream opens one connection to the service. Close on it is a
// half-close (it sends FIN and keeps reading), as CloseWrite is; the
// stream is gone once both sides have closed.
func (c *Conn) OpenStream() (tunnel.YamuxStream, error) {
	st, err := c.ys.OpenStream()
	if err != nil {
		return tunnel.YamuxStream{}, c.closedError(err)
	}
	st.SetReadDeadline(time.Now().Add(connectStatusTimeout))
	status, err := tunnel.ReadStreamStatus(st)
	if err != nil {
		st.Close()
		return tunnel.YamuxStream{}, c.closedError(err)
	}
	st.SetReadDeadline(time.Time{})
	switch status.Code {
	case tunnel.StatusOK:
		return tunnel.YamuxStream{Stream: st}, nil
	case tunnel.StatusUnknownService:
		st.Close()
		return tunnel.YamuxStream{}, fieldpass.Errorf(fieldpass.ENOTFOUND, "%s", status.Reason)
	default:
		st.Close()
		return tunnel.YamuxStream{}, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "%s", status.Reason)
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
