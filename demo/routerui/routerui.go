// Package routerui is a small web UI that behaves like a field router's:
// a login form with a session cookie, redirects and links to its own LAN
// address (http://192.168.1.1), a status page whose live value arrives over
// a WebSocket, and the habits that trip proxies (a cookie Domain, a CSP
// naming its LAN origin). The demo serves it behind a real connector, and
// the browser tests open it through the broker's device web proxy.
package routerui

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// LANOrigin is where the router believes it lives.
const LANOrigin = "http://192.168.1.1"

// UI is the router's web interface. Its zero value is not usable: New.
type UI struct {
	user, password string
	mux            *http.ServeMux

	mu       sync.Mutex
	sessions map[string]bool
	value    atomic.Int64 // the live reading the status page shows
	hostile  bool
}

// New returns a router UI with one account. hostile makes it also try to
// set cookies for other hosts (the portal's, any *.localhost), as a
// compromised device would.
func New(user, password string, hostile bool) *UI {
	u := &UI{user: user, password: password, sessions: map[string]bool{}, hostile: hostile, mux: http.NewServeMux()}
	u.mux.HandleFunc("GET /{$}", u.home)
	u.mux.HandleFunc("GET /login", u.loginForm)
	u.mux.HandleFunc("POST /login", u.login)
	u.mux.HandleFunc("GET /status", u.status)
	u.mux.HandleFunc("GET /status.js", u.script)
	u.mux.HandleFunc("GET /live", u.live)
	return u
}

func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Routers name their LAN origin everywhere, CSP included.
	w.Header().Set("Content-Security-Policy", "default-src 'self' "+LANOrigin+"; connect-src 'self' ws: "+LANOrigin)
	u.mux.ServeHTTP(w, r)
}

// Tick advances the live value every d until ctx ends.
func (u *UI) Tick(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			u.value.Add(1)
		}
	}
}

func (u *UI) loggedIn(r *http.Request) bool {
	c, err := r.Cookie("sid")
	if err != nil {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sessions[c.Value]
}

func (u *UI) home(w http.ResponseWriter, r *http.Request) {
	if !u.loggedIn(r) {
		http.Redirect(w, r, LANOrigin+"/login", http.StatusFound) // absolute, to its LAN address
		return
	}
	http.Redirect(w, r, LANOrigin+"/status", http.StatusFound)
}

var page = template.Must(template.New("p").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{.Title}} · FieldRouter 3000</title>
{{if .Script}}<script src="` + LANOrigin + `/status.js" defer></script>{{end}}</head>
<body><h1>FieldRouter 3000: {{.Title}}</h1>
{{if .Login}}<form method="post" action="` + LANOrigin + `/login">
<p>{{.Error}}</p>
<p><label for="user">User</label> <input id="user" name="user" autocomplete="username"></p>
<p><label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password"></p>
<p><button id="signin" type="submit">Sign in</button></p></form>
{{else}}<p>Signal: <output id="live">{{.Value}}</output> (live)</p>
<p><a id="refresh" href="` + LANOrigin + `/status">Refresh</a></p>{{end}}
</body></html>`))

func (u *UI) loginForm(w http.ResponseWriter, r *http.Request) {
	page.Execute(w, map[string]any{"Title": "Sign in", "Login": true})
}

func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	if r.PostFormValue("user") != u.user || r.PostFormValue("password") != u.password {
		w.WriteHeader(http.StatusUnauthorized)
		page.Execute(w, map[string]any{"Title": "Sign in", "Login": true, "Error": "Wrong user or password."})
		return
	}
	b := make([]byte, 16)
	rand.Read(b)
	sid := hex.EncodeToString(b)
	u.mu.Lock()
	u.sessions[sid] = true
	u.mu.Unlock()
	// Routers pin their cookie to their LAN address.
	w.Header().Add("Set-Cookie", "sid="+sid+"; Domain=192.168.1.1; Path=/; HttpOnly")
	if u.hostile {
		w.Header().Add("Set-Cookie", "fieldpass_session=stolen; Domain=localhost; Path=/")
		w.Header().Add("Set-Cookie", "__Host-fieldpass_web=stolen; Path=/; Secure")
		w.Header().Add("Set-Cookie", "spill=1; Domain=.localhost; Path=/")
	}
	http.Redirect(w, r, LANOrigin+"/status", http.StatusFound)
}

func (u *UI) status(w http.ResponseWriter, r *http.Request) {
	if !u.loggedIn(r) {
		http.Redirect(w, r, LANOrigin+"/login", http.StatusFound)
		return
	}
	page.Execute(w, map[string]any{"Title": "Status", "Value": u.value.Load(), "Script": true})
}

// The page's script: the live value over a WebSocket to the page's own host.
func (u *UI) script(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript")
	fmt.Fprint(w, `(function () {
  var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live");
  ws.onmessage = function (e) { document.getElementById("live").textContent = e.data; };
})();`)
}

func (u *UI) live(w http.ResponseWriter, r *http.Request) {
	if !u.loggedIn(r) {
		http.Error(w, "sign in first", http.StatusUnauthorized)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true}) // origin: the proxy's, checked there
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := c.CloseRead(r.Context())
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.Write(ctx, websocket.MessageText, []byte(strconv.FormatInt(u.value.Load(), 10))); err != nil {
				return
			}
		}
	}
}
