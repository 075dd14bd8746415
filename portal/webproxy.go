package portal

// Device web UIs through the broker. Each device service opened in the
// browser gets an origin of its own, <device>--<service>.<WebDomain>, so the
// device's pages and scripts can never read the portal's cookie, call the
// API as the person, or touch another device's UI: the browser's same-origin
// rules keep them apart. Opening one is a form POST on the portal (CSRF,
// logged in), which opens a recorded session through the session manager
// (grant, device, MFA: the one decision) and sends the browser to the
// device's origin with a one-time ticket; the ticket becomes a host-only
// cookie there. Every request then travels as HTTP over a stream of that
// session to the connector, which dials only the service it was named.
//
// Device UIs are hostile to proxies and may be hostile outright: responses
// are rewritten so that redirects stay on the device's origin, cookies stay
// host-only on it (never for the portal's host or another device's), CSP
// and CORS name the device's origin, and nothing a device answers can make
// the broker fetch another address: the only way out is the session's own
// stream. Every request is recorded (method, path, status, bytes, time).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/ratelimit"
	"github.com/fieldpass/fieldpass/tunnel"
)

const (
	// webEnterPath takes a ticket and sets the device origin's cookie; the
	// /.fieldpass/ prefix is the broker's on every device origin, never
	// proxied.
	webEnterPath = "/.fieldpass/enter"
	webTicketTTL = 30 * time.Second
	// webIdle ends a web session nobody has used for this long.
	webIdle = 15 * time.Minute
	// maxWebSessions bounds the proxied sessions one person may hold open.
	maxWebSessions = 16
	// webHostSep joins device and service in a device origin's first label.
	webHostSep = "--"
)

// webProxy holds the open device web sessions and their tickets.
type webProxy struct {
	mu      sync.Mutex
	byToken map[[32]byte]*webSession // SHA-256 of the origin cookie -> session
	tickets map[[32]byte]webTicket   // SHA-256 of a ticket -> what it opens
	log     chan fieldpass.WebRequest
}

type webTicket struct {
	ws      *webSession
	expires time.Time
}

// webSession is one device web UI open in one browser: a recorded session,
// the HTTP client that carries requests over its streams, and the idle
// timer that ends it.
type webSession struct {
	sess      *broker.Session
	https     bool // the device's side speaks TLS (Config.WebHTTPS)
	user      string
	host      string // the device origin's host (and port)
	origin    string // scheme://host
	proxy     *httputil.ReverseProxy
	idle      *time.Timer
	tokenID   [32]byte
	transport *http.Transport
}

func newWebProxy() *webProxy {
	return &webProxy{byToken: map[[32]byte]*webSession{}, tickets: map[[32]byte]webTicket{}, log: make(chan fieldpass.WebRequest, 4096)}
}

// webHost is the device origin's host of device's service, or "" when the
// names cannot make one DNS label (a service named with "--" or "_").
func (p *Portal) webHost(device, service string) string {
	if p.cfg.WebDomain == "" || strings.Contains(service, webHostSep) || strings.Contains(service, "_") {
		return ""
	}
	label := device + webHostSep + service
	if len(label) > 63 {
		return ""
	}
	host := label + "." + p.cfg.WebDomain
	if p.login.origin != nil && p.login.origin.Port() != "" {
		host = net.JoinHostPort(host, p.login.origin.Port())
	}
	return host
}

// parseWebHost reverses webHost: the device and service a request's Host
// names, if it is a device origin of ours.
func (p *Portal) parseWebHost(hostport string) (device, service string, ok bool) {
	if p.cfg.WebDomain == "" {
		return "", "", false
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	label, found := strings.CutSuffix(strings.ToLower(host), "."+p.cfg.WebDomain)
	if !found || strings.Contains(label, ".") {
		return "", "", false
	}
	i := strings.LastIndex(label, webHostSep)
	if i <= 0 {
		return "", "", false
	}
	device, service = label[:i], label[i+len(webHostSep):]
	if fieldpass.ValidateDeviceName(device) != nil || fieldpass.ValidateServiceName(service) != nil {
		return "", "", false
	}
	return device, service, true
}

// HandleWebOpen opens device's service in the browser: POST
// /web/{device}/{service} from the portal. The session is opened (and
// recorded) here, by the same decision as every connect; the browser goes
// on to the device's origin with a one-time ticket.
func (p *Portal) HandleWebOpen() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		device, service := chi.URLParam(r, "device"), chi.URLParam(r, "service")
		if p.cfg.Sessions == nil {
			p.fail(w, r, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "this broker does not carry sessions"))
			return
		}
		host := p.webHost(device, service)
		if host == "" {
			p.fail(w, r, fieldpass.Errorf(fieldpass.EUNAVAILABLE,
				"this broker has no web domain for device UIs (fieldpass-broker serve --web-domain), or the service name %q cannot name a web origin: use fieldpass forward %s %s", service, device, service))
			return
		}
		if n := p.web.count(c.User.Email); n >= maxWebSessions {
			p.fail(w, r, fieldpass.Errorf(fieldpass.ECONFLICT, "you have %d device web UIs open: close some (they end after %s unused)", n, fieldpass.FormatDuration(webIdle)))
			return
		}
		sess, err := p.cfg.Sessions.Open(r.Context(), c, device, service, ratelimit.ClientAddr(r))
		if err != nil {
			p.fail(w, r, err)
			return
		}
		origin := p.login.origin.Scheme + "://" + host
		ws := &webSession{sess: sess, user: c.User.Email, host: host, origin: origin,
			https: slices.Contains(p.cfg.WebHTTPS, device+"/"+service)}
		ws.proxy = p.reverseProxy(ws)
		ticket, err := p.web.open(ws, p.cfg.Now(), p.login.randomString)
		if err != nil {
			sess.End(fieldpass.EndError)
			p.fail(w, r, err)
			return
		}
		ws.idle = time.AfterFunc(webIdle, func() { sess.End(fieldpass.EndIdleTimeout) })
		go p.web.forgetWhenDone(ws)
		p.log.Info("device web UI opened", "session", sess.ID(), "user", c.User.Email, "device", device, "service", service)
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, origin+webEnterPath+"?"+url.Values{"ticket": {ticket}}.Encode(), http.StatusSeeOther)
	}
}

// open registers ws and returns a one-time ticket that lets one browser in.
func (wp *webProxy) open(ws *webSession, now time.Time, random func(int) (string, error)) (string, error) {
	ticket, err := random(32)
	if err != nil {
		return "", err
	}
	wp.mu.Lock()
	defer wp.mu.Unlock()
	for h, t := range wp.tickets {
		if now.After(t.expires) {
			delete(wp.tickets, h)
		}
	}
	wp.tickets[sha256.Sum256([]byte(ticket))] = webTicket{ws: ws, expires: now.Add(webTicketTTL)}
	return ticket, nil
}

// redeem exchanges a ticket, once, for the origin cookie of its session.
func (wp *webProxy) redeem(ticket string, now time.Time, random func(int) (string, error)) (*webSession, string, error) {
	h := sha256.Sum256([]byte(ticket))
	wp.mu.Lock()
	defer wp.mu.Unlock()
	t, ok := wp.tickets[h]
	delete(wp.tickets, h)
	if !ok || now.After(t.expires) {
		return nil, "", fieldpass.Errorf(fieldpass.EEXPIRED, "this link to a device's web UI is used or expired: open it again from the portal")
	}
	token, err := random(32)
	if err != nil {
		return nil, "", err
	}
	t.ws.tokenID = sha256.Sum256([]byte(token))
	wp.byToken[t.ws.tokenID] = t.ws
	return t.ws, token, nil
}

func (wp *webProxy) lookup(token string) *webSession {
	wp.mu.Lock()
	defer wp.mu.Unlock()
	return wp.byToken[sha256.Sum256([]byte(token))]
}

func (wp *webProxy) count(user string) int {
	wp.mu.Lock()
	defer wp.mu.Unlock()
	n := 0
	for _, ws := range wp.byToken {
		if ws.user == user {
			n++
		}
	}
	return n
}

// forgetWhenDone drops ws once its session ends (grant over, revoked, an
// admin, idle): its cookie then finds nothing.
func (wp *webProxy) forgetWhenDone(ws *webSession) {
	<-ws.sess.Done()
	ws.idle.Stop()
	ws.transport.CloseIdleConnections()
	wp.mu.Lock()
	if wp.byToken[ws.tokenID] == ws {
		delete(wp.byToken, ws.tokenID)
	}
	for h, t := range wp.tickets {
		if t.ws == ws {
			delete(wp.tickets, h)
		}
	}
	wp.mu.Unlock()
}

// webCookieName is the device origin's cookie: __Host- where the origin is
// https (host-only, Secure, Path=/ enforced by the browser).
func (p *Portal) webCookieName() string {
	if p.login.secure {
		return "__Host-fieldpass_web"
	}
	return "fieldpass_web"
}

// WebHosts serves requests addressed to a device origin; all others go on
// to next. It runs before routing, for every request.
func (p *Portal) WebHosts(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		device, service, ok := p.parseWebHost(r.Host)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		p.serveWeb(w, r, device, service)
	})
}

func (p *Portal) serveWeb(w http.ResponseWriter, r *http.Request, device, service string) {
	now := p.cfg.Now()
	if r.URL.Path == webEnterPath {
		ws, token, err := p.web.redeem(r.URL.Query().Get("ticket"), now, p.login.randomString)
		if err != nil {
			p.webPage(w, http.StatusGone, "Link expired", fieldpass.ErrorMessage(err))
			return
		}
		if ws.host != r.Host {
			p.webPage(w, http.StatusBadRequest, "Wrong address", "This link belongs to another device's web UI.")
			return
		}
		http.SetCookie(w, &http.Cookie{Name: p.webCookieName(), Value: token, Path: "/", HttpOnly: true,
			Secure: p.login.secure, SameSite: http.SameSiteLaxMode})
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/.fieldpass/") {
		http.NotFound(w, r)
		return
	}
	ck, err := r.Cookie(p.webCookieName())
	var ws *webSession
	if err == nil {
		ws = p.web.lookup(ck.Value)
	}
	if ws == nil || ws.host != r.Host {
		p.webPage(w, http.StatusForbidden, "Not open", fmt.Sprintf(
			"%s on %s is not open in this browser, or its session has ended. Open it from the portal's device page.", service, device))
		return
	}
	select {
	case <-ws.sess.Done():
		p.webPage(w, http.StatusGone, "Session ended", fmt.Sprintf("Your session to %s on %s has ended: %s.", service, device, ws.sess.Reason()))
		return
	default:
	}
	// A WebSocket from anywhere but the device's own pages is refused: no
	// other site may ride the person's cookie into the device.
	if isUpgrade(r) {
		if o := r.Header.Get("Origin"); o != "" && !strings.EqualFold(o, ws.origin) {
			p.webPage(w, http.StatusForbidden, "Refused", "A WebSocket to a device must come from the device's own pages.")
			return
		}
	}
	ws.idle.Reset(webIdle)
	ws.proxy.ServeHTTP(w, r)
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// reverseProxy is ws's proxy: every request leaves on a new or pooled
// stream of ws's session, addressed as the device's origin.
func (p *Portal) reverseProxy(ws *webSession) *httputil.ReverseProxy {
	transport := &http.Transport{
		// The only way out: a stream of this session. The address the
		// transport asks for is ignored.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			st, err := ws.sess.Stream(ctx)
			if err != nil {
				return nil, err
			}
			conn := net.Conn(streamConn{HalfCloser: st})
			if ws.https {
				// An operator accepted this service's self-signed
				// certificate (Config.WebHTTPS): TLS inside the tunnel's
				// stream, unverified, to the device and nowhere else.
				tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
				if err := tc.HandshakeContext(ctx); err != nil {
					conn.Close()
					return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "TLS with the device's web service failed: %v", err)
				}
				conn = tc
			}
			return conn, nil
		},
		Proxy:                 nil,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		DisableCompression:    true, // pass the device's encoding through untouched
	}
	cookieName := p.webCookieName()
	ws.transport = transport
	return &httputil.ReverseProxy{
		Transport: transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "device"
			// The device sees the origin the browser uses, so the absolute
			// links it builds from Host point back through the broker.
			pr.Out.Host = ws.host
			stripCookie(pr.Out.Header, cookieName)
			// Bodies may need rewriting (rewriteBody): ask for them plain.
			pr.Out.Header.Del("Accept-Encoding")
			pr.Out.Header.Del("X-Forwarded-For")
			pr.Out.Header.Del("Forwarded")
			rec := &webRecorder{p: p, ws: ws, start: p.cfg.Now(), method: pr.In.Method, path: pr.In.URL.RequestURI(), upgrade: isUpgrade(pr.In)}
			if pr.Out.Body != nil && pr.Out.Body != http.NoBody {
				pr.Out.Body = &countingBody{ReadCloser: pr.Out.Body, n: &rec.in}
			}
			*pr.Out = *pr.Out.WithContext(context.WithValue(pr.Out.Context(), webRecorderKey{}, rec))
		},
		ModifyResponse: func(resp *http.Response) error {
			rewriteResponse(resp, ws, cookieName, p.login.secure)
			if err := rewriteBody(resp, ws.origin); err != nil {
				return err
			}
			if rec, ok := resp.Request.Context().Value(webRecorderKey{}).(*webRecorder); ok {
				rec.status = resp.StatusCode
				resp.Body = &recordingBody{ReadCloser: resp.Body, rec: rec}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if rec, ok := r.Context().Value(webRecorderKey{}).(*webRecorder); ok {
				rec.status = http.StatusBadGateway
				rec.done()
			}
			msg := "The device did not answer: " + fieldpass.ErrorMessage(err)
			if !errors.As(err, new(*fieldpass.Error)) {
				msg = "The device did not answer."
				p.log.Info("device web request failed", "session", ws.sess.ID(), "err", err)
			}
			p.webPage(w, http.StatusBadGateway, "Device unreachable", msg)
		},
		ErrorLog: nil,
	}
}

// rewriteResponse keeps what a device answers on its own origin.
func rewriteResponse(resp *http.Response, ws *webSession, cookieName string, secure bool) {
	h := resp.Header
	// Redirects: a path stays as it is; one to a private LAN address
	// (http://192.168.1.1/login) means the device itself, and stays on its
	// origin. Elsewhere is the device's business: the broker follows none.
	if loc := h.Get("Location"); loc != "" {
		if u, err := url.Parse(loc); err != nil {
			h.Del("Location")
		} else if u.IsAbs() && lanOriginRE.MatchString(u.Scheme+"://"+u.Host) {
			h.Set("Location", ws.origin+u.RequestURI())
		}
	}
	// Cookies: host-only on the device origin, whatever the device asked;
	// never one named like ours.
	if cookies := resp.Cookies(); len(cookies) > 0 {
		h.Del("Set-Cookie")
		for _, c := range cookies {
			if strings.EqualFold(c.Name, cookieName) || strings.HasPrefix(strings.ToLower(c.Name), "__host-fieldpass") ||
				strings.HasPrefix(strings.ToLower(c.Name), "fieldpass_") {
				continue
			}
			c.Domain = ""
			c.Secure = secure
			if c.Path == "" {
				c.Path = "/"
			}
			if v := c.String(); v != "" {
				h.Add("Set-Cookie", v)
			}
		}
	}
	// CSP: sources naming another origin (the device's LAN address) mean
	// the device: 'self'. Nobody may frame a device UI.
	if csp := h.Get("Content-Security-Policy"); csp != "" {
		h.Set("Content-Security-Policy", rewriteCSP(csp))
	} else {
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
	}
	// CORS: only the device's own origin may read it with credentials.
	if acao := h.Get("Access-Control-Allow-Origin"); acao != "" && !strings.EqualFold(acao, ws.origin) {
		h.Del("Access-Control-Allow-Origin")
		h.Del("Access-Control-Allow-Credentials")
	}
	h.Del("Strict-Transport-Security") // the broker decides its origins' transport
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
}

// maxRewrite bounds a body read whole to rewrite its links; larger ones
// pass through as they are.
const maxRewrite = 8 << 20

// lanOriginRE finds absolute URLs to private IPv4 addresses (RFC 1918,
// link-local): the address a router's pages name it by.
var lanOriginRE = regexp.MustCompile(`\b(https?|wss?)://(10\.\d{1,3}\.\d{1,3}\.\d{1,3}|192\.168\.\d{1,3}\.\d{1,3}|172\.(1[6-9]|2\d|3[01])\.\d{1,3}\.\d{1,3}|169\.254\.\d{1,3}\.\d{1,3})(:\d{1,5})?`)

// rewriteBody points absolute links to private LAN addresses in HTML, CSS
// and JavaScript at the device's origin: such a link can only mean the
// device (the broker reaches nothing else), and a page that hard-codes it
// would otherwise send the browser to an address it cannot reach.
func rewriteBody(resp *http.Response, origin string) error {
	ct := strings.ToLower(resp.Header.Get("Content-Type"))
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Header.Get("Content-Encoding") != "" ||
		!(strings.HasPrefix(ct, "text/html") || strings.HasPrefix(ct, "text/css") || strings.Contains(ct, "javascript")) {
		return nil
	}
	if resp.ContentLength > maxRewrite {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRewrite+1))
	if err != nil {
		return err
	}
	if len(body) > maxRewrite {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		return nil
	}
	resp.Body.Close()
	wsOrigin := "ws" + strings.TrimPrefix(origin, "http")
	body = lanOriginRE.ReplaceAllFunc(body, func(m []byte) []byte {
		if bytes.HasPrefix(m, []byte("ws")) {
			return []byte(wsOrigin)
		}
		return []byte(origin)
	})
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// rewriteCSP replaces sources naming a private LAN address (the device, as
// rewriteBody reads it) with 'self', and forbids framing.
func rewriteCSP(csp string) string {
	var out []string
	hasFrame := false
	for _, dir := range strings.Split(csp, ";") {
		fields := strings.Fields(dir)
		if len(fields) == 0 {
			continue
		}
		name := strings.ToLower(fields[0])
		if name == "frame-ancestors" {
			hasFrame = true
			out = append(out, "frame-ancestors 'none'")
			continue
		}
		for i, src := range fields[1:] {
			if m := lanOriginRE.FindString(src); m != "" && strings.HasPrefix(src, m) {
				fields[i+1] = "'self'"
			}
		}
		out = append(out, strings.Join(fields, " "))
	}
	if !hasFrame {
		out = append(out, "frame-ancestors 'none'")
	}
	return strings.Join(out, "; ")
}

// stripCookie removes the named cookie from a request's Cookie headers, so
// that the device never sees the person's ticket to it.
func stripCookie(h http.Header, name string) {
	var keep []string
	for _, line := range h.Values("Cookie") {
		for _, part := range strings.Split(line, ";") {
			k, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if k == "" || strings.EqualFold(k, name) || strings.HasPrefix(strings.ToLower(k), "__host-fieldpass") ||
				strings.HasPrefix(strings.ToLower(k), "fieldpass_") {
				continue
			}
			keep = append(keep, strings.TrimSpace(part))
		}
	}
	h.Del("Cookie")
	if len(keep) > 0 {
		h.Set("Cookie", strings.Join(keep, "; "))
	}
}

// webPage answers a device origin with one of the broker's own small pages.
func (p *Portal) webPage(w http.ResponseWriter, status int, title, msg string) {
	writePage(w, status, page{Title: title, Paras: []string{msg}})
}

type webRecorderKey struct{}

// webRecorder collects one proxied request's record.
type webRecorder struct {
	p        *Portal
	ws       *webSession
	start    time.Time
	method   string
	path     string
	upgrade  bool
	status   int
	in, out  atomic.Int64
	doneOnce sync.Once
}

func (rec *webRecorder) done() {
	rec.doneOnce.Do(func() {
		r := fieldpass.WebRequest{SessionID: rec.ws.sess.ID(), At: rec.start, Method: rec.method, Path: rec.path,
			Status: rec.status, BytesIn: rec.in.Load(), BytesOut: rec.out.Load(), Duration: rec.p.cfg.Now().Sub(rec.start), Upgrade: rec.upgrade}
		select {
		case rec.p.web.log <- r:
		default:
			// The writer is behind by thousands: say so rather than block a
			// person's page on the audit store.
			rec.p.log.Warn("web request log full: request not recorded", "session", r.SessionID, "path", r.Path)
		}
	})
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// recordingBody counts a response and records the request when it closes.
type recordingBody struct {
	io.ReadCloser
	rec *webRecorder
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.rec.out.Add(int64(n))
	return n, err
}

func (b *recordingBody) Write(p []byte) (int, error) { // a WebSocket's upstream half
	w, ok := b.ReadCloser.(io.Writer)
	if !ok {
		return 0, errors.New("not a two-way body")
	}
	n, err := w.Write(p)
	b.rec.in.Add(int64(n))
	return n, err
}

func (b *recordingBody) Close() error {
	err := b.ReadCloser.Close()
	b.rec.done()
	return err
}

// RunWebLog writes the device web request log until ctx ends, in batches.
func (p *Portal) RunWebLog(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var batch []fieldpass.WebRequest
	flush := func() {
		if len(batch) == 0 || p.cfg.DB == nil {
			batch = batch[:0]
			return
		}
		wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := p.cfg.DB.RecordWebRequests(wctx, batch)
		cancel()
		if err != nil {
			p.log.Error("record web requests", "requests", len(batch), "err", err)
			if len(batch) < 10000 {
				return // keep them for the next try
			}
		}
		batch = batch[:0]
	}
	for {
		select {
		case r := <-p.web.log:
			batch = append(batch, r)
			if len(batch) >= 500 {
				flush()
			}
		case <-t.C:
			flush()
		case <-ctx.Done():
			for {
				select {
				case r := <-p.web.log:
					batch = append(batch, r)
				default:
					flush()
					return
				}
			}
		}
	}
}

// streamConn is a session stream as the net.Conn http.Transport wants.
type streamConn struct{ tunnel.HalfCloser }

func (streamConn) LocalAddr() net.Addr                { return webAddr{} }
func (streamConn) RemoteAddr() net.Addr               { return webAddr{} }
func (streamConn) SetDeadline(t time.Time) error      { return nil }
func (streamConn) SetReadDeadline(t time.Time) error  { return nil }
func (streamConn) SetWriteDeadline(t time.Time) error { return nil }

type webAddr struct{}

func (webAddr) Network() string { return "fieldpass" }
func (webAddr) String() string  { return "device" }
