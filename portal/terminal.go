package portal

// The browser terminal. The page (templates/terminal.html, static/
// terminal.js with xterm.js) opens a WebSocket to the portal's own origin;
// its first message names the device and service and carries the device
// account's password or private key, used for this one login and never
// stored or logged. The broker opens a recorded session through the
// session manager (the one decision), and is the SSH client
// (golang.org/x/crypto/ssh) over a stream of that session. The device's
// host key is pinned on first use per device and service; a changed key is
// refused until an admin accepts it. Output (and, on devices whose labels
// ask for it, input) is recorded as asciicast v2 in Postgres in chunks of
// at most a second; admins and auditors can watch a live terminal, and
// replay it afterwards.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"golang.org/x/crypto/ssh"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/ratelimit"
)

const (
	termReadLimit   = 64 << 10 // one message from the page: keystrokes, a resize, the login
	termSSHTimeout  = 20 * time.Second
	termFlushEvery  = time.Second
	termWatchBuffer = 64 << 10 // output kept for a watcher who joins late
	maxKeySize      = 16 << 10
)

// termHello is the page's first message.
type termHello struct {
	Device     string `json:"device"`
	Service    string `json:"service"`
	User       string `json:"user"`
	Password   string `json:"password,omitempty"`
	Key        string `json:"key,omitempty"` // a private key, PEM
	Passphrase string `json:"passphrase,omitempty"`
	Cols       int    `json:"cols"`
	Rows       int    `json:"rows"`
}

// termControl is a later message from the page (text frames); keystrokes
// travel as binary frames.
type termControl struct {
	Type string `json:"type"` // resize
	Cols int    `json:"cols"`
	Rows int    `json:"rows"`
}

// termStatus is what the broker tells the page (text frames); output
// travels as binary frames.
type termStatus struct {
	Type        string    `json:"type"` // ready, ended, error
	Session     string    `json:"session,omitempty"`
	GrantEnds   time.Time `json:"grant_ends,omitzero"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Pinned      bool      `json:"pinned,omitempty"` // pinned by this session (first use)
	Reason      string    `json:"reason,omitempty"`
	Message     string    `json:"message,omitempty"`
}

// terminalData is the terminal page.
type terminalData struct {
	Device, Service string
	GrantEnds       time.Time
}

// HandleTerminal is the terminal page of a device's SSH service.
func (p *Portal) HandleTerminal() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		device, service := chi.URLParam(r, "device"), chi.URLParam(r, "service")
		dev, err := p.cfg.Access.Device(r.Context(), c, device)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		p.render(w, r, http.StatusOK, "terminal", view{Title: "Terminal: " + device, Current: "devices",
			Data: terminalData{Device: dev.Name, Service: service, GrantEnds: dev.GrantEnds}})
	}
}

// HandleTerminalSocket carries one terminal: GET /terminal/socket, a
// WebSocket from the portal's own pages only.
func (p *Portal) HandleTerminalSocket() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		if p.cfg.Sessions == nil {
			p.fail(w, r, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "this broker does not carry sessions"))
			return
		}
		conn, err := acceptSocket(w, r)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		conn.SetReadLimit(termReadLimit)
		p.runTerminal(context.Background(), conn, c, ratelimit.ClientAddr(r))
	}
}

func (p *Portal) runTerminal(ctx context.Context, conn *websocket.Conn, c *fieldpass.Caller, client string) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	say := func(st termStatus) {
		b, _ := json.Marshal(st)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn.Write(wctx, websocket.MessageText, b)
		cancel()
	}
	fail := func(err error) {
		say(termStatus{Type: "error", Message: sentence(fieldpass.ErrorMessage(err))})
		conn.Close(websocket.StatusPolicyViolation, "refused")
	}

	hctx, hcancel := context.WithTimeout(ctx, time.Minute)
	typ, raw, err := conn.Read(hctx)
	hcancel()
	if err != nil || typ != websocket.MessageText {
		return
	}
	var hello termHello
	if err := json.Unmarshal(raw, &hello); err != nil {
		fail(fieldpass.Errorf(fieldpass.EINVALID, "the terminal's first message is not a login"))
		return
	}
	auth, err := sshAuth(hello)
	hello.Password, hello.Key, hello.Passphrase = "", "", "" // used once, above
	if err != nil {
		fail(err)
		return
	}
	dev, err := p.cfg.Access.Device(ctx, c, hello.Device)
	if err != nil {
		fail(err)
		return
	}
	sess, err := p.cfg.Sessions.Open(ctx, c, hello.Device, hello.Service, client)
	if err != nil {
		fail(err)
		return
	}
	defer sess.End(fieldpass.EndClientClosed) // no-op once the broker ended it
	actor := fieldpass.UserActor(c.User.Email)

	st, err := sess.Stream(ctx)
	if err != nil {
		fail(err)
		sess.End(fieldpass.EndError)
		return
	}
	var pinnedNow bool
	var fingerprint string
	hostKeyCheck := func(_ string, _ net.Addr, key ssh.PublicKey) error {
		fingerprint = ssh.FingerprintSHA256(key)
		offered := fieldpass.SSHHostKey{DeviceID: dev.ID, Service: hello.Service, Type: key.Type(), Key: key.Marshal(), Fingerprint: fingerprint, PinnedBy: actor}
		pinned, err := p.cfg.DB.HostKey(ctx, dev.ID, hello.Service)
		switch {
		case fieldpass.ErrorCode(err) == fieldpass.ENOTFOUND:
			if pinned, err = p.cfg.DB.PinHostKey(ctx, offered, dev.Name); err != nil {
				return err
			}
			pinnedNow = pinned.Fingerprint == fingerprint
		case err != nil:
			return err
		case pinned.Fingerprint == "": // an admin accepted a new key: pin this one
			if pinned, err = p.cfg.DB.RepinHostKey(ctx, offered, dev.Name); err != nil {
				return err
			}
			pinnedNow = pinned.Fingerprint == fingerprint
		}
		if pinned.Fingerprint != fingerprint {
			p.log.Warn("ssh host key changed: refused", "device", dev.Name, "service", hello.Service, "pinned", pinned.Fingerprint, "offered", fingerprint)
			return fieldpass.Errorf(fieldpass.EFORBIDDEN,
				"the host key of %s on %s has changed (pinned %s since %s, offered %s): this can be an attack, so the terminal refuses it; if the device was reinstalled, an admin accepts the new key on the device's page",
				hello.Service, dev.Name, pinned.Fingerprint, when(pinned.PinnedAt), fingerprint)
		}
		return nil
	}
	client2, err := sshClient(ctx, streamConn{HalfCloser: st}, hello.User, auth, hostKeyCheck)
	if err != nil {
		fail(err)
		sess.End(fieldpass.EndError)
		return
	}
	defer client2.Close()
	shell, err := client2.NewSession()
	if err != nil {
		fail(fieldpass.Errorf(fieldpass.EUNAVAILABLE, "the device's SSH server refused a session: %v", err))
		return
	}
	cols, rows := clampSize(hello.Cols, hello.Rows)
	if err := shell.RequestPty("xterm-256color", rows, cols, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
		fail(fieldpass.Errorf(fieldpass.EUNAVAILABLE, "the device's SSH server refused a terminal: %v", err))
		return
	}
	stdin, _ := shell.StdinPipe()
	stdout, _ := shell.StdoutPipe()
	stderr, _ := shell.StderrPipe()
	if err := shell.Shell(); err != nil {
		fail(fieldpass.Errorf(fieldpass.EUNAVAILABLE, "the device's SSH server refused a shell: %v", err))
		return
	}

	rec := p.newRecorder(ctx, sess.ID(), dev, cols, rows)
	defer rec.close()
	p.log.Info("terminal opened", "session", sess.ID(), "user", c.User.Email, "device", dev.Name, "service", hello.Service, "host_key", fingerprint)
	say(termStatus{Type: "ready", Session: sess.ID(), GrantEnds: sess.GrantEnd(), Fingerprint: fingerprint, Pinned: pinnedNow})

	out := make(chan []byte, 64)
	var readers sync.WaitGroup
	readers.Add(2)
	for _, src := range []interface{ Read([]byte) (int, error) }{stdout, stderr} {
		go func() {
			defer readers.Done()
			for {
				buf := make([]byte, 32<<10)
				n, err := src.Read(buf)
				if n > 0 {
					select {
					case out <- buf[:n]:
					case <-ctx.Done():
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	go func() { readers.Wait(); close(out) }()

	// The page's keystrokes and resizes.
	go func() {
		defer cancel()
		for {
			typ, msg, err := conn.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary {
				rec.input(msg)
				if _, err := stdin.Write(msg); err != nil {
					return
				}
				continue
			}
			var ctl termControl
			if json.Unmarshal(msg, &ctl) == nil && ctl.Type == "resize" {
				c, r := clampSize(ctl.Cols, ctl.Rows)
				shell.WindowChange(r, c)
				rec.resize(c, r)
			}
		}
	}()

	for {
		select {
		case b, ok := <-out:
			if !ok { // the shell ended
				msg := "The shell on the device ended."
				if broker.TunnelLost(st) {
					// The device's tunnel dropped (roaming, a connector
					// restart): the session would wait for the device, but
					// the shell's connection is gone, and the terminal is
					// that one connection.
					msg = "The connection to the device dropped (it is reconnecting): open the terminal again in a moment."
					sess.End(fieldpass.EndDeviceClosed)
				}
				say(termStatus{Type: "ended", Reason: string(fieldpass.EndDeviceClosed), Message: msg})
				conn.Close(websocket.StatusNormalClosure, "")
				return
			}
			rec.output(b)
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			err := conn.Write(wctx, websocket.MessageBinary, b)
			wcancel()
			if err != nil {
				return
			}
		case <-sess.Done():
			reason := sess.Reason()
			say(termStatus{Type: "ended", Reason: string(reason), Message: endMessage(reason)})
			conn.Close(websocket.StatusNormalClosure, string(reason))
			return
		case <-ctx.Done():
			return
		}
	}
}

// acceptSocket upgrades a page's WebSocket. The library refuses an origin
// other than the request's host: no other site can drive a terminal, or
// watch one, with the person's cookie. The connection outlives the
// server's read and write timeouts, which would cut a long session.
func acceptSocket(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	return websocket.Accept(w, r, nil)
}

// endMessage says why the broker ended a session, as a person reads it.
func endMessage(r fieldpass.EndReason) string {
	switch r {
	case fieldpass.EndGrantExpired:
		return "Your access to this device has ended: the grant expired."
	case fieldpass.EndGrantRevoked:
		return "Your access to this device was revoked."
	case fieldpass.EndByAdmin:
		return "An administrator ended this session."
	case fieldpass.EndDeviceDisabled:
		return "The device was disabled."
	case fieldpass.EndUserDisabled:
		return "Your account was disabled."
	case fieldpass.EndIdleTimeout:
		return "The session was idle for too long."
	case fieldpass.EndDeviceClosed:
		return "The device went offline and did not come back in time."
	}
	return "The session ended (" + string(r) + ")."
}

func clampSize(cols, rows int) (int, int) {
	return max(10, min(cols, 500)), max(4, min(rows, 200))
}

// sshAuth turns the page's login into SSH authentication methods.
func sshAuth(h termHello) ([]ssh.AuthMethod, error) {
	if fieldpass.ValidateDeviceName(h.Device) != nil || fieldpass.ValidateServiceName(h.Service) != nil {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "the terminal names no valid device and service")
	}
	if h.User == "" || len(h.User) > 64 || strings.ContainsAny(h.User, " \t\r\n") {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "give the device account's user name")
	}
	var methods []ssh.AuthMethod
	if h.Key != "" {
		if len(h.Key) > maxKeySize {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "that key file is larger than %d KiB: give a private key", maxKeySize>>10)
		}
		var signer ssh.Signer
		var err error
		if h.Passphrase != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(h.Key), []byte(h.Passphrase))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(h.Key))
		}
		var missing *ssh.PassphraseMissingError
		switch {
		case errors.As(err, &missing):
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "that key is protected by a passphrase: give it too")
		case err != nil:
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "that file is not a private key this terminal can use")
		}
		methods = append(methods, ssh.PublicKeys(signer))
	}
	if h.Password != "" {
		pw := h.Password
		methods = append(methods, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				answers := make([]string, len(qs))
				for i := range qs {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	if len(methods) == 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "give the device account's password or a private key")
	}
	return methods, nil
}

// sshClient is the SSH handshake over conn, bounded in time.
func sshClient(ctx context.Context, conn net.Conn, user string, auth []ssh.AuthMethod, check ssh.HostKeyCallback) (*ssh.Client, error) {
	type result struct {
		c   *ssh.Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		cc, chans, reqs, err := ssh.NewClientConn(conn, "device", &ssh.ClientConfig{User: user, Auth: auth, HostKeyCallback: check, Timeout: termSSHTimeout})
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{c: ssh.NewClient(cc, chans, reqs)}
	}()
	select {
	case r := <-done:
		if r.err == nil {
			return r.c, nil
		}
		var fe *fieldpass.Error
		if errors.As(r.err, &fe) {
			return nil, fe
		}
		if strings.Contains(r.err.Error(), "unable to authenticate") {
			return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the device refused that user name and password or key")
		}
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "SSH to the device failed: %v", r.err)
	case <-time.After(termSSHTimeout):
		conn.Close()
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "the device's SSH server did not answer in %s", fieldpass.FormatDuration(termSSHTimeout))
	case <-ctx.Done():
		conn.Close()
		return nil, ctx.Err()
	}
}

// recorder writes one terminal's asciicast v2 recording in chunks, and
// feeds its live watchers.
type recorder struct {
	p         *Portal
	sessionID string
	start     time.Time
	withInput bool

	mu     sync.Mutex
	buf    strings.Builder // event lines not yet written
	seq    int
	failed bool
	watch  *watch
	stop   chan struct{}
	done   chan struct{}
}

func (p *Portal) newRecorder(ctx context.Context, sessionID string, dev access.DeviceAccess, cols, rows int) *recorder {
	rec := &recorder{p: p, sessionID: sessionID, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	for k, v := range p.cfg.RecordInputLabels {
		if dev.Labels[k] == v {
			rec.withInput = true
		}
	}
	header, _ := json.Marshal(map[string]any{"version": 2, "width": cols, "height": rows, "timestamp": rec.start.Unix(),
		"title": dev.Name, "env": map[string]string{"TERM": "xterm-256color"}})
	if err := p.cfg.DB.StartRecording(ctx, sessionID, string(header), rec.withInput); err != nil {
		p.log.Error("start terminal recording", "session", sessionID, "err", err)
		rec.failed = true
	}
	rec.watch = p.watches.add(sessionID)
	go rec.flushLoop()
	return rec
}

func (rec *recorder) event(kind string, data string) {
	line, _ := json.Marshal([]any{float64(time.Since(rec.start).Microseconds()) / 1e6, kind, data})
	rec.mu.Lock()
	rec.buf.Write(line)
	rec.buf.WriteByte('\n')
	rec.mu.Unlock()
}

func (rec *recorder) output(b []byte) {
	rec.event("o", strings.ToValidUTF8(string(b), "\uFFFD"))
	rec.watch.send(b)
}

func (rec *recorder) input(b []byte) {
	if rec.withInput {
		rec.event("i", strings.ToValidUTF8(string(b), "\uFFFD"))
	}
}

func (rec *recorder) resize(cols, rows int) { rec.event("r", fmt.Sprintf("%dx%d", cols, rows)) }

func (rec *recorder) flushLoop() {
	defer close(rec.done)
	t := time.NewTicker(termFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			rec.flush()
		case <-rec.stop:
			rec.flush()
			return
		}
	}
}

func (rec *recorder) flush() {
	rec.mu.Lock()
	events := rec.buf.String()
	rec.buf.Reset()
	seq := rec.seq
	if events != "" {
		rec.seq++
	}
	rec.mu.Unlock()
	if events == "" || rec.failed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rec.p.cfg.DB.AppendRecording(ctx, rec.sessionID, seq, events); err != nil {
		rec.p.log.Error("append terminal recording", "session", rec.sessionID, "err", err)
	}
}

func (rec *recorder) close() {
	close(rec.stop)
	<-rec.done
	rec.p.watches.remove(rec.sessionID)
}

// watches are the live terminals admins and auditors may watch.
type watches struct {
	mu   sync.Mutex
	live map[string]*watch
}

// watch fans one terminal's output out to its watchers, keeping the last
// termWatchBuffer bytes for one who joins late.
type watch struct {
	mu      sync.Mutex
	recent  []byte
	clients map[chan []byte]struct{}
	ended   chan struct{}
}

func (ws *watches) add(id string) *watch {
	w := &watch{clients: map[chan []byte]struct{}{}, ended: make(chan struct{})}
	ws.mu.Lock()
	if ws.live == nil {
		ws.live = map[string]*watch{}
	}
	ws.live[id] = w
	ws.mu.Unlock()
	return w
}

func (ws *watches) get(id string) *watch {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.live[id]
}

func (ws *watches) remove(id string) {
	ws.mu.Lock()
	w := ws.live[id]
	delete(ws.live, id)
	ws.mu.Unlock()
	if w != nil {
		close(w.ended)
	}
}

func (w *watch) send(b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.recent = append(w.recent, b...)
	if len(w.recent) > termWatchBuffer {
		w.recent = w.recent[len(w.recent)-termWatchBuffer:]
	}
	for c := range w.clients {
		select {
		case c <- b:
		default: // a watcher too slow to keep up misses output, never the person
		}
	}
}

func (w *watch) subscribe() (chan []byte, []byte) {
	c := make(chan []byte, 256)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.clients[c] = struct{}{}
	return c, append([]byte(nil), w.recent...)
}

func (w *watch) unsubscribe(c chan []byte) {
	w.mu.Lock()
	delete(w.clients, c)
	w.mu.Unlock()
}

// HandleWatch is the page where admins and auditors watch a live terminal.
func (p *Portal) HandleWatch() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		if err := access.Require(c, fieldpass.RoleAdmin, fieldpass.RoleAuditor); err != nil {
			p.fail(w, r, err)
			return
		}
		s, err := p.cfg.Access.Session(r.Context(), c, chi.URLParam(r, "id"))
		if err != nil {
			p.fail(w, r, err)
			return
		}
		p.render(w, r, http.StatusOK, "watch", view{Title: "Watching " + s.User, Current: "live", Data: s})
	}
}

// HandleWatchSocket streams a live terminal's output, read-only.
func (p *Portal) HandleWatchSocket() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		if err := access.Require(c, fieldpass.RoleAdmin, fieldpass.RoleAuditor); err != nil {
			p.fail(w, r, err)
			return
		}
		id := chi.URLParam(r, "id")
		wt := p.watches.get(id)
		if wt == nil {
			p.fail(w, r, fieldpass.Errorf(fieldpass.ENOTFOUND, "no live terminal in session %s on this broker", id))
			return
		}
		conn, err := acceptSocket(w, r)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		p.log.Info("terminal watched", "session", id, "by", c.User.Email)
		if _, err := p.cfg.DB.AppendAudit(r.Context(), fieldpass.AuditEvent{Actor: fieldpass.UserActor(c.User.Email), Action: "session.watch",
			Target: "session:" + id}); err != nil {
			p.log.Error("audit watch", "session", id, "err", err)
		}
		ctx := conn.CloseRead(context.Background()) // watchers type nothing
		ch, recent := wt.subscribe()
		defer wt.unsubscribe(ch)
		if len(recent) > 0 {
			conn.Write(ctx, websocket.MessageBinary, recent)
		}
		for {
			select {
			case b := <-ch:
				if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
					return
				}
			case <-wt.ended:
				conn.Close(websocket.StatusNormalClosure, "ended")
				return
			case <-ctx.Done():
				return
			}
		}
	}
}

// HandleRecording answers a session's terminal recording (asciicast v2) to
// its person, and to admins and auditors.
func (p *Portal) HandleRecording() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		id := chi.URLParam(r, "id")
		if _, err := p.cfg.Access.Session(r.Context(), c, id); err != nil {
			p.fail(w, r, err)
			return
		}
		cast, err := p.cfg.DB.Recording(r.Context(), id)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-asciicast")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Disposition", `attachment; filename="session-`+id+`.cast"`)
		w.Write([]byte(cast))
	}
}

// HandleHostKeyAccept clears the pinned host key of a device's service
// (admins): the next terminal pins the key it is offered. Audited.
func (p *Portal) HandleHostKeyAccept() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		if err := access.Require(c, fieldpass.RoleAdmin); err != nil {
			p.fail(w, r, err)
			return
		}
		name, service := chi.URLParam(r, "name"), chi.URLParam(r, "service")
		dev, err := p.cfg.Access.Device(r.Context(), c, name)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		if err := p.cfg.DB.ForgetHostKey(r.Context(), fieldpass.UserActor(c.User.Email), dev.ID, dev.Name, service); err != nil {
			p.fail(w, r, err)
			return
		}
		p.done(w, r, "/devices/"+dev.Name, "The next terminal to "+service+" on "+dev.Name+" pins the host key it is offered. Compare its fingerprint with the device's.")
	}
}
