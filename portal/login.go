package portal

// People's login: the OIDC authorization-code flow for the portal (session
// cookie, CSRF), and the device-style flow for the CLI (login_device.go).
//
// Login state (state, nonce, PKCE verifier, return address) travels in a
// short-lived cookie, encrypted and authenticated with AES-256-GCM, one per
// login in progress, scoped to /auth/callback. Why a cookie and not a map:
// it binds the callback to the browser that started the login (a callback
// carrying someone else's code and state finds no cookie: no login CSRF),
// it costs the broker no memory however many logins are started (the login
// endpoint needs no authentication), and with the key derived from the
// client secret any broker sharing the client can finish a login another
// started. A state is accepted once: the cookie is cleared and the state
// remembered until the cookie would have expired.

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/ratelimit"
)

// Audit actions of people's logins, beside the data layer's token.issue
// and token.revoke. Details hold the token id, never the token.
const (
	// AuditUserLogin: a session or CLI token issued through a login;
	// details: token_id, kind, method (oidc or device), mfa, amr, acr,
	// client, and for the device flow approved_by (the session's token id).
	AuditUserLogin = "user.login"
	// AuditUserLoginRefused: a login the identity provider vouched for
	// but the broker refused (disabled user, MFA missing); details: reason.
	AuditUserLoginRefused = "user.login_refused"
	// AuditUserLogout: a person revoked their own token; details: token_id.
	AuditUserLogout = "user.logout"
)

const (
	defaultSessionTTL = 12 * time.Hour
	// defaultCLITokenTTL matches the portal login: a CLI token approved by
	// a browser session outlives it by no more than a session (issue 10).
	defaultCLITokenTTL = 12 * time.Hour
	loginCookiePrefix  = "fieldpass_login_"
	loginCookieTTL     = 10 * time.Minute
	callbackPath       = "/auth/callback"
	maxReturnLen       = 2048
)

// loginState is the login subsystem's state. Its maps are bounded: used
// states by the login rate limit and their ten-minute life, MFA records by
// the tokens' lifetimes. Device logins in progress are in Postgres.
type loginState struct {
	oidc   *OIDCConfig // nil: login through an identity provider is off
	db     *postgres.DB
	now    func() time.Time
	rand   io.Reader
	aead   cipher.AEAD
	secure bool     // cookies are Secure (not on http://localhost)
	origin *url.URL // PublicURL; nil if unset

	mu sync.Mutex
	// used: redeemed login states -> when to forget them.
	used map[string]time.Time
	// mfa caches what the login of a token asserted (token id -> record),
	// read back from the token's user.login audit event when missing.
	mfa      map[string]loginRecord
	swept    time.Time
	approves *ratelimit.Keyed // device approvals per account
}

func newLoginState(cfg Config) *loginState {
	ls := &loginState{
		db: cfg.DB, now: cfg.Now, rand: rand.Reader, secure: true,
		used: map[string]time.Time{}, mfa: map[string]loginRecord{},
		approves: ratelimit.New(0.2, 10),
	}
	if u, err := url.Parse(cfg.PublicURL); err == nil && u.Host != "" && (u.Scheme == "https" || u.Scheme == "http") {
		ls.origin = &url.URL{Scheme: u.Scheme, Host: u.Host}
		ls.secure = !(u.Scheme == "http" && fieldpass.IsLoopbackHost(u.Hostname()))
	}
	if cfg.OIDC == nil || cfg.OIDC.Provider == nil {
		return ls
	}
	o := *cfg.OIDC
	if o.SessionTTL <= 0 {
		o.SessionTTL = defaultSessionTTL
	}
	if o.CLITokenTTL <= 0 {
		o.CLITokenTTL = defaultCLITokenTTL
	}
	if o.Rand != nil {
		ls.rand = o.Rand
	}
	key := o.CookieKey
	if len(key) != 32 {
		key = o.Provider.CookieKey()
	}
	if len(key) != 32 {
		key = make([]byte, 32)
		if _, err := io.ReadFull(rand.Reader, key); err != nil {
			panic("crypto/rand failed: " + err.Error()) // never returns an error on supported platforms
		}
	}
	block, _ := aes.NewCipher(key) // 32 bytes: cannot fail
	ls.aead, _ = cipher.NewGCM(block)
	ls.oidc = &o
	return ls
}

// randomString returns n random bytes, base64url-encoded.
func (ls *loginState) randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(ls.rand, b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// CSRFToken is the CSRF token of the portal session whose cookie r
// carries ("" without one): forms send it in the field "csrf", scripts in
// the header X-CSRF-Token. It is an HMAC keyed by the session token
// itself, so it is per session, needs no server-side state or key, holds
// across restarts and brokers, and is worthless without the cookie; it does
// not reveal the token.
func CSRFToken(r *http.Request) string {
	for _, name := range []string{SecureSessionCookie, SessionCookie} {
		if c, err := r.Cookie(name); err == nil && c.Value != "" {
			return csrfFor(c.Value)
		}
	}
	return ""
}

func csrfFor(sessionToken string) string {
	m := hmac.New(sha256.New, []byte(sessionToken))
	m.Write([]byte("fieldpass csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CSRFOK checks the CSRF token of a cookie-authenticated, state-changing
// request: X-CSRF-Token, or the form field csrf of a urlencoded or
// multipart body (never the query string), compared in constant time with
// CSRFToken. A request whose Origin header names another origin fails too.
func (p *Portal) CSRFOK(r *http.Request) bool {
	token := p.SessionToken(r)
	if token == "" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && p.login.origin != nil && !strings.EqualFold(o, p.login.origin.String()) {
		return false
	}
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		ct := r.Header.Get("Content-Type")
		if strings.HasPrefix(ct, "application/x-www-form-urlencoded") || strings.HasPrefix(ct, "multipart/form-data") {
			r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
			got = r.PostFormValue("csrf")
		}
	}
	want := csrfFor(token)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// loginCookie is what the login-in-progress cookie holds.
type loginCookie struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Return   string `json:"r"`
	Expires  int64  `json:"e"` // Unix seconds
}

// loginCookieName is per login, so that logins started in two tabs do
// not overwrite each other's state.
func loginCookieName(state string) string {
	if len(state) > 16 {
		state = state[:16]
	}
	return loginCookiePrefix + state
}

func (ls *loginState) sealLoginCookie(lc loginCookie) (string, error) {
	plain, err := json.Marshal(lc)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, ls.aead.NonceSize())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return "", err
	}
	sealed := ls.aead.Seal(nonce, nonce, plain, []byte(loginCookieName(lc.State)))
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}

func (ls *loginState) openLoginCookie(name, value string) (loginCookie, bool) {
	var lc loginCookie
	b, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(b) < ls.aead.NonceSize() {
		return lc, false
	}
	ns := ls.aead.NonceSize()
	plain, err := ls.aead.Open(nil, b[:ns], b[ns:], []byte(name))
	if err != nil || json.Unmarshal(plain, &lc) != nil {
		return lc, false
	}
	return lc, true
}

func (ls *loginState) cookie(name, value, path string, maxAge time.Duration) *http.Cookie {
	c := &http.Cookie{Name: name, Value: value, Path: path, HttpOnly: true, Secure: ls.secure, SameSite: http.SameSiteLaxMode}
	if maxAge < 0 {
		c.MaxAge = -1
		c.Expires = time.Unix(1, 0)
	} else {
		c.MaxAge = int(maxAge / time.Second)
		c.Expires = ls.now().Add(maxAge)
	}
	return c
}

// localReturn checks a login's return address: a path on the broker's own
// origin (or a URL of that origin, made a path). Anything that a browser
// could read as another host is refused: //host, /\host, schemes, control
// characters (browsers drop tabs and newlines), backslashes, and their
// percent-encoded forms. Addresses under /auth/ become "/".
func (ls *loginState) localReturn(raw string) (string, error) {
	bad := fieldpass.Errorf(fieldpass.EINVALID, "the return address must be a path on this site, like /devices")
	if raw == "" {
		return "/", nil
	}
	if len(raw) > maxReturnLen || hasUnsafe(raw) {
		return "", bad
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.User != nil {
		return "", bad
	}
	if u.Scheme != "" || u.Host != "" {
		if ls.origin == nil || !strings.EqualFold(u.Scheme, ls.origin.Scheme) || !strings.EqualFold(u.Host, ls.origin.Host) {
			return "", bad
		}
	} else if !strings.HasPrefix(raw, "/") || strings.HasPrefix(raw, "//") {
		return "", bad
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	dec, err := url.PathUnescape(p)
	if err != nil || !strings.HasPrefix(p, "/") || strings.HasPrefix(dec, "//") || hasUnsafe(dec) {
		return "", bad
	}
	if qs, err := url.QueryUnescape(u.RawQuery); err != nil || hasUnsafe(strings.ReplaceAll(qs, `\`, "")) {
		return "", bad
	}
	if dec == "/auth" || strings.HasPrefix(dec, "/auth/") {
		return "/", nil
	}
	if u.RawQuery != "" {
		p += "?" + u.RawQuery
	}
	return p, nil
}

// hasUnsafe reports control characters, backslashes or non-ASCII bytes.
func hasUnsafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b >= 0x7f || b == '\\' {
			return true
		}
	}
	return false
}

// redirect answers 303 to a path checked by localReturn (or a fixed one).
func redirect(w http.ResponseWriter, path string) {
	w.Header().Set("Location", path)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
}

// HandleLogin starts an OIDC login: GET /auth/login?return=PATH.
func (p *Portal) HandleLogin() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		if ls.oidc == nil {
			writePage(w, http.StatusNotFound, notConfiguredPage)
			return
		}
		ret, err := ls.localReturn(r.URL.Query().Get("return"))
		if err != nil {
			writePage(w, http.StatusBadRequest, page{Title: "Invalid return address", Paras: []string{fieldpass.ErrorMessage(err) + "."}, Retry: "/auth/login"})
			return
		}
		state, err1 := ls.randomString(32)
		nonce, err2 := ls.randomString(32)
		verifier, err3 := ls.randomString(32) // 43 characters: a valid RFC 7636 verifier
		if err := errors.Join(err1, err2, err3); err != nil {
			p.loginFailed(w, r, fmt.Errorf("random: %w", err))
			return
		}
		to, err := ls.oidc.Provider.AuthCodeURL(r.Context(), state, nonce, verifier)
		if err != nil {
			p.loginFailed(w, r, err)
			return
		}
		exp := ls.now().Add(loginCookieTTL)
		v, err := ls.sealLoginCookie(loginCookie{State: state, Nonce: nonce, Verifier: verifier, Return: ret, Expires: exp.Unix()})
		if err != nil {
			p.loginFailed(w, r, err)
			return
		}
		http.SetCookie(w, ls.cookie(loginCookieName(state), v, callbackPath, loginCookieTTL))
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, to, http.StatusFound)
	}
}

// takeLoginCookie finds, checks and clears the cookie of the login whose
// state the callback carries, and marks the state used.
func (ls *loginState) takeLoginCookie(w http.ResponseWriter, r *http.Request, state string) (loginCookie, bool) {
	if len(state) != 43 {
		return loginCookie{}, false
	}
	name := loginCookieName(state)
	ck, err := r.Cookie(name)
	if err != nil {
		return loginCookie{}, false
	}
	http.SetCookie(w, ls.cookie(name, "", callbackPath, -1))
	lc, ok := ls.openLoginCookie(name, ck.Value)
	now := ls.now()
	if !ok || subtle.ConstantTimeCompare([]byte(lc.State), []byte(state)) != 1 || now.Unix() >= lc.Expires {
		return loginCookie{}, false
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for k, until := range ls.used {
		if now.After(until) {
			delete(ls.used, k)
		}
	}
	if _, seen := ls.used[state]; seen {
		return loginCookie{}, false
	}
	ls.used[state] = time.Unix(lc.Expires, 0)
	return lc, true
}

// HandleCallback finishes an OIDC login: GET /auth/callback from the IdP.
func (p *Portal) HandleCallback() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		w.Header().Set("Referrer-Policy", "no-referrer")
		if ls.oidc == nil {
			writePage(w, http.StatusNotFound, notConfiguredPage)
			return
		}
		q := r.URL.Query()
		lc, ok := ls.takeLoginCookie(w, r, q.Get("state"))
		if !ok {
			writePage(w, http.StatusBadRequest, page{Title: "Login expired or not started here",
				Paras: []string{"This login answer does not belong to a login started in this browser in the last 10 minutes, or was already used. Start again."},
				Retry: "/auth/login"})
			return
		}
		retry := "/auth/login?" + url.Values{"return": {lc.Return}}.Encode()
		if e := q.Get("error"); e != "" {
			msg := "The identity provider refused the login: " + clip(e, 100)
			if d := q.Get("error_description"); d != "" {
				msg += " (" + clip(d, 300) + ")"
			}
			writePage(w, http.StatusForbidden, page{Title: "Login refused", Paras: []string{msg + "."}, Retry: retry})
			return
		}
		code := q.Get("code")
		if code == "" {
			writePage(w, http.StatusBadRequest, page{Title: "Login failed", Paras: []string{"The identity provider's answer carried no code."}, Retry: retry})
			return
		}
		idp := ls.oidc.Provider
		id, err := idp.Exchange(r.Context(), code, lc.Verifier, lc.Nonce)
		if err != nil {
			p.log.Warn("login refused", "reason", fieldpass.ErrorMessage(err), "client", ratelimit.ClientAddr(r))
			p.loginFailed(w, r, err, retry)
			return
		}
		if err := idp.MFA().Check(id); err != nil {
			p.refuseLogin(r, id.Email, "mfa_missing")
			writePage(w, http.StatusForbidden, page{Title: "Multi-factor login required", Paras: []string{fieldpass.ErrorMessage(err)}, Retry: retry})
			return
		}
		actor := fieldpass.UserActor(id.Email)
		// The person is who (issuer, subject) says, not whoever holds the
		// email: a new subject with a known email waits for an admin.
		u, err := ls.db.LoginUser(r.Context(), actor, postgres.LoginIdentity{Issuer: id.Issuer, Subject: id.Subject, Email: id.Email, Roles: id.Roles})
		if fieldpass.ErrorCode(err) == fieldpass.EFORBIDDEN {
			p.refuseLogin(r, id.Email, "identity_unconfirmed")
			writePage(w, http.StatusForbidden, page{Title: "Login not accepted", Paras: []string{fieldpass.ErrorMessage(err) + "."}})
			return
		}
		if err != nil {
			p.loginFailed(w, r, err, retry)
			return
		}
		if u.Disabled {
			p.refuseLogin(r, id.Email, "user_disabled")
			writePage(w, http.StatusForbidden, disabledPage(u.Email))
			return
		}
		token, t, err := ls.db.IssueToken(r.Context(), actor, u.Email, fieldpass.TokenSession, ls.oidc.SessionTTL)
		if err != nil {
			if fieldpass.ErrorCode(err) == fieldpass.EFORBIDDEN {
				writePage(w, http.StatusForbidden, disabledPage(u.Email))
				return
			}
			p.loginFailed(w, r, err, retry)
			return
		}
		rec := loginRecord{MFA: id.MFA, AMR: id.AMR, ACR: id.ACR, Expires: t.ExpiresAt}
		if err := p.recordLogin(r.Context(), t, rec, map[string]any{
			"method": "oidc", "client": ratelimit.ClientAddr(r), "issuer": id.Issuer, "subject": id.Subject,
		}); err != nil {
			p.loginFailed(w, r, err, retry)
			return
		}
		p.log.Info("login", "email", u.Email, "method", "oidc", "token_id", t.ID, "mfa", id.MFA, "roles", roleList(u.Roles), "client", ratelimit.ClientAddr(r))
		http.SetCookie(w, ls.cookie(p.sessionCookieName(), token, "/", ls.oidc.SessionTTL))
		redirect(w, lc.Return)
	}
}

// recordLogin appends the user.login event for a token just issued, and
// remembers what the login asserted. Without the event there is no login:
// the token is revoked (fail closed on audit).
func (p *Portal) recordLogin(ctx context.Context, t *fieldpass.Token, rec loginRecord, details map[string]any) error {
	details["token_id"] = t.ID
	details["kind"] = string(t.Kind)
	details["mfa"] = rec.MFA
	if len(rec.AMR) > 0 {
		details["amr"] = rec.AMR
	}
	if rec.ACR != "" {
		details["acr"] = rec.ACR
	}
	actor := fieldpass.UserActor(t.Email)
	_, err := p.login.db.AppendAudit(ctx, fieldpass.AuditEvent{Actor: actor, Action: AuditUserLogin, Target: fieldpass.UserTarget(t.Email), Details: details})
	if err != nil {
		// A fresh context: the request's may be what failed.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, rerr := p.login.db.RevokeToken(rctx, actor, t.ID); rerr != nil {
			p.log.Error("login: revoke token after audit failure", "token_id", t.ID, "err", rerr)
		}
		return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "the audit log cannot be written, so no login is possible now: try again shortly")
	}
	p.login.remember(t.ID, rec)
	return nil
}

// refuseLogin records a login the provider vouched for and the broker
// refused. Failing to record it changes nothing for the person refused.
func (p *Portal) refuseLogin(r *http.Request, email, reason string) {
	p.log.Warn("login refused", "email", email, "reason", reason, "client", ratelimit.ClientAddr(r))
	_, err := p.login.db.AppendAudit(r.Context(), fieldpass.AuditEvent{Actor: fieldpass.UserActor(email), Action: AuditUserLoginRefused,
		Target: fieldpass.UserTarget(email), Details: map[string]any{"reason": reason, "client": ratelimit.ClientAddr(r)}})
	if err != nil {
		p.log.Error("audit refused login", "email", email, "err", err)
	}
}

// HandleLogout revokes the caller's own token: POST /auth/logout.
func (p *Portal) HandleLogout() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		actor := fieldpass.UserActor(c.User.Email)
		if _, err := p.login.db.RevokeToken(r.Context(), actor, c.Token.ID); err != nil && fieldpass.ErrorCode(err) != fieldpass.ECONFLICT {
			p.writeError(w, r, err)
			return
		}
		if _, err := p.login.db.AppendAudit(r.Context(), fieldpass.AuditEvent{Actor: actor, Action: AuditUserLogout,
			Target: fieldpass.UserTarget(c.User.Email), Details: map[string]any{"token_id": c.Token.ID, "kind": string(c.Token.Kind)}}); err != nil {
			// The revocation, itself recorded, is what counts.
			p.log.Error("audit logout", "email", c.User.Email, "err", err)
		}
		p.login.forget(c.Token.ID)
		p.log.Info("logout", "email", c.User.Email, "token_id", c.Token.ID)
		if c.ByCookie {
			http.SetCookie(w, p.login.cookie(p.sessionCookieName(), "", "/", -1))
			if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
				redirect(w, "/")
				return
			}
		}
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	}
}

// loginFailed shows err on a page: its message if it is a fieldpass error,
// a generic one (logged) otherwise.
func (p *Portal) loginFailed(w http.ResponseWriter, r *http.Request, err error, retry ...string) {
	code := fieldpass.ErrorCode(err)
	if code == fieldpass.EINTERNAL {
		p.log.Error("login failed", "path", r.URL.Path, "err", err)
	}
	status := httpapi.Status(code)
	msg := fieldpass.ErrorMessage(err)
	if msg != "" {
		msg = strings.ToUpper(msg[:1]) + msg[1:]
		if !strings.HasSuffix(msg, ".") {
			msg += "."
		}
	}
	pg := page{Title: "Login failed", Paras: []string{msg}, Retry: "/auth/login"}
	if len(retry) > 0 {
		pg.Retry = retry[0]
	}
	writePage(w, status, pg)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func roleList(roles []fieldpass.Role) string {
	if len(roles) == 0 {
		return "vendor"
	}
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = string(r)
	}
	return strings.Join(out, ",")
}

// page is a small HTML page of the login flow.
type page struct {
	Title string
	Paras []string
	Retry string // a link to start again, if any
	Form  *deviceForm
}

var notConfiguredPage = page{Title: "Login is not configured",
	Paras: []string{"This broker has no identity provider configured. Ask an operator for a token (fieldpass-broker user token) and set FIELDPASS_TOKEN."}}

func disabledPage(email string) page {
	return page{Title: "Account disabled", Paras: []string{"The account " + email + " is disabled on this broker: you cannot log in. Ask a Fieldpass administrator if this is a mistake."}}
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · Fieldpass</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;line-height:1.5}
input[name=user_code]{font:1.4rem ui-monospace,monospace;letter-spacing:.1em;width:11ch;text-transform:uppercase}
button{font-size:1rem;margin-right:.5rem}.muted{color:#555}</style></head>
<body><h1>{{.Title}}</h1>
{{range .Paras}}<p>{{.}}</p>
{{end}}{{with .Form}}<form method="post" action="/login/device">
<input type="hidden" name="csrf" value="{{.CSRF}}">
{{if .Review}}<input type="hidden" name="user_code" value="{{.UserCode}}">
<table><tr><th>Code</th><td><code>{{.UserCode}}</code></td></tr>
<tr><th>Client</th><td><code>{{.Agent}}</code> (as it says of itself)</td></tr>
<tr><th>Started from</th><td>{{.Client}}</td></tr>
<tr><th>Started at</th><td>{{.Started}}</td></tr>
<tr><th>Expires in</th><td>{{.Expires}}</td></tr></table>
<p>Approving lets that command line act as {{.Email}}{{if .Roles}} (roles: {{.Roles}}){{end}} for {{.TTL}}.</p>
<p><button name="action" value="approve">Approve</button><button name="action" value="deny">Deny</button></p>
{{else}}<p><label>Code shown by <code>fieldpass login</code> in your terminal:<br>
<input name="user_code" value="" autocomplete="off" spellcheck="false" required autofocus></label></p>
<p><button name="action" value="review">Continue</button></p>
<p class="muted">Continue only with a code from a login you started yourself.</p>{{end}}
</form>
{{end}}{{with .Retry}}<p><a href="{{.}}">Start again</a></p>{{end}}
</body></html>
`))

// writePage answers an HTML page that no one may frame or cache.
func writePage(w http.ResponseWriter, status int, p page) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(status)
	pageTmpl.Execute(w, p)
}
