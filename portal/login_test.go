package portal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/identity"
	"github.com/fieldpass/fieldpass/portal"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/tunnel"
)

// idpUser is a person at the mock identity provider. Claims beyond
// mockoidc's own (amr, acr, a custom groups claim) and forged ones (another
// audience, an expired token, a wrong nonce) go through forge.
type idpUser struct {
	sub, email string
	groups     []string
	amr        []string
	acr        string
	forge      func(claims jwt.MapClaims) // on ID token and userinfo claims
	// groupsInUserinfo leaves the groups out of the ID token: the broker
	// must ask the userinfo endpoint.
	groupsInUserinfo bool
}

func (u *idpUser) ID() string { return u.sub }

func (u *idpUser) Userinfo(scopes []string) ([]byte, error) {
	c := jwt.MapClaims{"sub": u.sub, "email": u.email, "groups": u.groups}
	if u.forge != nil {
		u.forge(c)
	}
	return json.Marshal(c)
}

func (u *idpUser) Claims(scopes []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	c := jwt.MapClaims{
		"iss": base.Issuer, "sub": base.Subject, "aud": []string(base.Audience),
		"exp": base.ExpiresAt.Unix(), "iat": base.IssuedAt.Unix(), "nbf": base.NotBefore.Unix(),
		"jti": base.ID, "nonce": base.Nonce, "email": u.email, "email_verified": true,
	}
	if u.groups != nil && !u.groupsInUserinfo {
		c["groups"] = u.groups
	}
	if u.amr != nil {
		c["amr"] = u.amr
	}
	if u.acr != "" {
		c["acr"] = u.acr
	}
	if u.forge != nil {
		u.forge(c)
	}
	return c, nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// syncBuffer collects log lines from the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// loginEnv is a broker API with login on, a real OIDC provider (mockoidc)
// and a clock the test moves.
type loginEnv struct {
	t     *testing.T
	db    *postgres.DB
	dbURL string
	idp   *mockoidc.MockOIDC
	srv   *httptest.Server
	api   *apiserver.Server
	cfg   portal.Config
	// portal is the API's portal: its login records are in memory.
	portal *portal.Portal
	clock  *clock
	logs   *syncBuffer
	// front is what srv serves: the API above, or another broker's
	// (login_shared_test.go), as a load balancer in front of several would.
	front front
	// urls are every URL a browser of this test visited.
	mu   sync.Mutex
	urls []string
}

type envOpt func(*identity.Config)

func newLoginEnv(t *testing.T, opts ...envOpt) *loginEnv {
	t.Helper()
	e := &loginEnv{t: t, clock: &clock{t: time.Now()}, logs: &syncBuffer{}}
	e.dbURL = pgtest.NewDatabase(t)
	db, err := postgres.Open(context.Background(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	e.db = db

	idp, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	// mockoidc's session store has no lock of its own.
	var idpMu sync.Mutex
	idp.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			idpMu.Lock()
			defer idpMu.Unlock()
			next.ServeHTTP(w, r)
		})
	})
	ln := mustListen(t)
	if err := idp.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Shutdown() })
	e.idp = idp

	e.srv = httptest.NewUnstartedServer(nil)
	public := "http://" + e.srv.Listener.Addr().String()
	icfg := identity.Config{
		Issuer:       idp.Issuer(),
		ClientID:     idp.ClientID,
		ClientSecret: idp.ClientSecret,
		RedirectURL:  public + "/auth/callback",
		Roles: identity.RoleMap{Groups: map[string][]fieldpass.Role{
			"fp-admins": {fieldpass.RoleAdmin, fieldpass.RoleApprover},
			"field-eng": {fieldpass.RoleEngineer},
		}},
	}
	for _, o := range opts {
		o(&icfg)
	}
	p, err := identity.New(icfg)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = portal.Config{
		DB:        db,
		OIDC:      &portal.OIDCConfig{Provider: p},
		PublicURL: public,
		Logger:    slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:       e.clock.Now,
	}
	e.portal = portal.New(e.cfg)
	e.api = apiserver.New(apiserver.Config{
		DB: db, Portal: e.portal, PublicURL: public,
		EnrollRate: 1000, EnrollBurst: 1000,
		Logger: e.cfg.Logger, Now: e.clock.Now,
	})
	e.front.to(e.api.Handler())
	e.srv.Config.Handler = &e.front
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

// restart gives a new Portal on the same database (a broker restart).
func (e *loginEnv) restart() *portal.Portal { return portal.New(e.cfg) }

// browser is a cookie-keeping HTTP client that follows no redirect by
// itself: the tests walk the login step by step.
type browser struct {
	e   *loginEnv
	c   *http.Client
	jar *cookiejar.Jar
}

func (e *loginEnv) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, jar: jar, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browser) do(req *http.Request) *http.Response {
	b.e.t.Helper()
	b.e.mu.Lock()
	b.e.urls = append(b.e.urls, req.URL.String())
	b.e.mu.Unlock()
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

func (b *browser) get(u string) *http.Response {
	b.e.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = b.e.srv.URL + u
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return b.do(req)
}

func (b *browser) postForm(path string, form url.Values, header ...string) *http.Response {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.do(req)
}

func body(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return string(b)
}

func wantStatus(t *testing.T, resp *http.Response, want int, contains ...string) {
	t.Helper()
	b := body(resp)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want, b)
	}
	for _, c := range contains {
		if !strings.Contains(b, c) {
			t.Errorf("%s %s: body lacks %q: %s", resp.Request.Method, resp.Request.URL.Path, c, b)
		}
	}
}

func location(t *testing.T, resp *http.Response) string {
	t.Helper()
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("%s: status %d, want a redirect; body: %s", resp.Request.URL, resp.StatusCode, body(resp))
	}
	return resp.Header.Get("Location")
}

// start begins a login and returns the identity provider's authorization
// URL.
func (b *browser) start(ret string) string {
	b.e.t.Helper()
	path := "/auth/login"
	if ret != "" {
		path += "?" + url.Values{"return": {ret}}.Encode()
	}
	return location(b.e.t, b.get(path))
}

// authorize has the identity provider log in user (queued) and returns
// the callback URL it sends the browser to.
func (b *browser) authorize(authURL string, user *idpUser) string {
	b.e.t.Helper()
	if user != nil {
		b.e.idp.QueueUser(user)
	}
	return location(b.e.t, b.get(authURL))
}

// login runs the whole flow and returns the callback's answer.
func (b *browser) login(ret string, user *idpUser) *http.Response {
	b.e.t.Helper()
	return b.get(b.authorize(b.start(ret), user))
}

func (b *browser) session() string {
	u, _ := url.Parse(b.e.srv.URL)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == portal.SessionCookie {
			return c.Value
		}
	}
	return ""
}

func (b *browser) csrf() string {
	req, _ := http.NewRequest(http.MethodGet, b.e.srv.URL, nil)
	req.AddCookie(&http.Cookie{Name: portal.SessionCookie, Value: b.session()})
	return portal.CSRFToken(req)
}

func alice() *idpUser {
	return &idpUser{sub: "alice-1", email: "Alice@Example.com", groups: []string{"fp-admins", "field-eng", "staff"}}
}

func (e *loginEnv) actions(t *testing.T) []string {
	t.Helper()
	evs, err := e.db.AuditEvents(context.Background(), fieldpass.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Action)
	}
	return out
}

// noSecretsLeaked checks that no token or device code appeared in a URL
// the browsers visited or in a log line.
func (e *loginEnv) noSecretsLeaked(t *testing.T, secrets ...string) {
	t.Helper()
	logs := e.logs.String()
	for _, s := range []string{fieldpass.TokenPrefix, "fpd_"} {
		if strings.Contains(logs, s) {
			t.Errorf("a token or device code (%s...) is in the log:\n%s", s, logs)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, u := range e.urls {
		if strings.Contains(u, fieldpass.TokenPrefix) || strings.Contains(u, "fpd_") {
			t.Errorf("a token travelled in a URL: %s", u)
		}
		for _, s := range secrets {
			if s != "" && (strings.Contains(u, s) || strings.Contains(logs, s)) {
				t.Errorf("a secret leaked into a URL or the log")
			}
		}
	}
}

func TestOIDCLogin(t *testing.T) {
	e := newLoginEnv(t)
	b := e.browser()
	ctx := context.Background()

	authURL := b.start("/devices?site=north")
	q := mustParse(t, authURL).Query()
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 || len(q.Get("state")) != 43 || len(q.Get("nonce")) != 43 {
		t.Fatalf("authorization request lacks PKCE S256, state or nonce: %s", authURL)
	}
	if got := q.Get("scope"); got != "openid email groups" {
		t.Errorf("scope %q, want the defaults", got)
	}
	cb := b.authorize(authURL, alice())
	resp := b.get(cb)
	if got := location(t, resp); got != "/devices?site=north" {
		t.Fatalf("after login: redirected to %q, want the return address", got)
	}
	var sc *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == portal.SessionCookie {
			sc = c
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteLaxMode || sc.Path != "/" || sc.Secure || sc.MaxAge != int((12*time.Hour)/time.Second) {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Lax, Path=/, 12h (not Secure on http://127.0.0.1)", sc)
	}
	u, tok, err := e.db.Authenticate(ctx, sc.Value)
	if err != nil {
		t.Fatal(err)
	}
	if u.Email != "alice@example.com" || !slices.Equal(u.Roles, []fieldpass.Role{"admin", "approver", "engineer"}) || tok.Kind != fieldpass.TokenSession {
		t.Errorf("logged in as %+v with %+v", u, tok)
	}

	// The cookie works on the API.
	resp = b.get("/api/v1/me")
	wantStatus(t, resp, http.StatusOK)
	var me httpapi.Me
	if err := json.Unmarshal([]byte(body(resp)), &me); err != nil || me.Email != "alice@example.com" || me.TokenKind != "session" {
		t.Errorf("GET /me: %+v, %v", me, err)
	}
	if !slices.Contains(e.actions(t), portal.AuditUserLogin) {
		t.Errorf("audit %v lacks %s", e.actions(t), portal.AuditUserLogin)
	}
	if e.portal.MFAAsserted(ctx, tok) {
		t.Errorf("MFAAsserted: true for a login without amr")
	}

	// Roles follow the identity provider at each login.
	b2 := e.browser()
	resp = b2.login("", &idpUser{sub: "alice-1", email: "alice@example.com", groups: []string{"staff"}})
	if got := location(t, resp); got != "/" {
		t.Errorf("default return: %q, want /", got)
	}
	if u, _, err := e.db.Authenticate(ctx, b2.session()); err != nil || !u.Vendor() {
		t.Errorf("after losing the groups: %+v, %v; want a vendor", u, err)
	}

	// Groups only at the userinfo endpoint are found there.
	b3 := e.browser()
	location(t, b3.login("", &idpUser{sub: "bob-1", email: "bob@example.com", groups: []string{"field-eng"}, groupsInUserinfo: true}))
	if u, _, err := e.db.Authenticate(ctx, b3.session()); err != nil || !slices.Equal(u.Roles, []fieldpass.Role{"engineer"}) {
		t.Errorf("groups from userinfo: %+v, %v; want an engineer", u, err)
	}

	// Logout needs the CSRF token; then the token is revoked.
	wantStatus(t, b.postForm("/auth/logout", nil), http.StatusForbidden, "CSRF")
	wantStatus(t, b.postForm("/auth/logout", url.Values{"csrf": {"x" + b.csrf()[1:]}}), http.StatusForbidden)
	wantStatus(t, b.postForm("/auth/logout", url.Values{"csrf": {b.csrf()}}, "Origin", "https://evil.example"), http.StatusForbidden)
	session := b.session()
	if got := location(t, b.postForm("/auth/logout", url.Values{"csrf": {b.csrf()}})); got != "/" {
		t.Errorf("logout redirected to %q", got)
	}
	if b.session() != "" {
		t.Errorf("session cookie still set after logout")
	}
	if _, _, err := e.db.Authenticate(ctx, session); fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN {
		t.Errorf("token after logout: %v, want revoked", err)
	}
	// The header form of the CSRF token, from a script.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/auth/logout", nil)
	req.Header.Set("X-CSRF-Token", b2.csrf())
	wantStatus(t, b2.do(req), http.StatusNoContent)
	if !slices.Contains(e.actions(t), portal.AuditUserLogout) {
		t.Errorf("audit lacks %s", portal.AuditUserLogout)
	}
	e.noSecretsLeaked(t, session)
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestLoginRefusals: every way a callback can be wrong is refused, and
// leaves no session.
func TestLoginRefusals(t *testing.T) {
	e := newLoginEnv(t)

	t.Run("state of no login", func(t *testing.T) {
		b := e.browser()
		cb := mustParse(t, b.authorize(b.start(""), alice()))
		q := cb.Query()
		q.Set("state", strings.Repeat("A", 43))
		cb.RawQuery = q.Encode()
		wantStatus(t, b.get(cb.String()), http.StatusBadRequest, "not started here")
		wantStatus(t, b.get(e.srv.URL+"/auth/callback?code=x"), http.StatusBadRequest)
	})
	t.Run("callback in another browser (login CSRF)", func(t *testing.T) {
		attacker, victim := e.browser(), e.browser()
		cb := attacker.authorize(attacker.start(""), alice())
		wantStatus(t, victim.get(cb), http.StatusBadRequest, "not started here")
		if victim.session() != "" {
			t.Errorf("victim got a session")
		}
	})
	t.Run("replayed callback", func(t *testing.T) {
		b := e.browser()
		authURL := b.start("")
		cbURL := b.authorize(authURL, alice())
		// Keep the login cookie to put it back after it is used.
		cu := mustParse(t, cbURL)
		saved := b.jar.Cookies(cu)
		location(t, b.get(cbURL))
		wantStatus(t, b.get(cbURL), http.StatusBadRequest)
		b.jar.SetCookies(cu, saved)
		wantStatus(t, b.get(cbURL), http.StatusBadRequest, "already used")
	})
	t.Run("code of another login (PKCE)", func(t *testing.T) {
		b := e.browser()
		cbA := mustParse(t, b.authorize(b.start(""), alice()))
		cbB := mustParse(t, b.authorize(b.start(""), alice()))
		q := cbA.Query()
		q.Set("code", cbB.Query().Get("code"))
		cbA.RawQuery = q.Encode()
		wantStatus(t, b.get(cbA.String()), http.StatusForbidden, "refused the login")
		// (mockoidc burns a code at its first use, PKCE failing or not.)
		// The code of a finished login, with the state of a new one.
		cbD := mustParse(t, b.authorize(b.start(""), alice()))
		location(t, b.get(cbD.String()))
		cbC := mustParse(t, b.authorize(b.start(""), alice()))
		q = cbC.Query()
		q.Set("code", cbD.Query().Get("code"))
		cbC.RawQuery = q.Encode()
		wantStatus(t, b.get(cbC.String()), http.StatusForbidden, "refused the login")
	})
	for _, tc := range []struct {
		name  string
		forge func(jwt.MapClaims)
		want  string
	}{
		{"nonce mismatch", func(c jwt.MapClaims) { c["nonce"] = "replayed-nonce" }, "nonce does not match"},
		{"no nonce", func(c jwt.MapClaims) { delete(c, "nonce") }, "nonce does not match"},
		{"wrong audience", func(c jwt.MapClaims) { c["aud"] = []string{"another-client"} }, "expected audience"},
		{"two audiences without azp", func(c jwt.MapClaims) { c["aud"] = []string{e.idp.ClientID, "another-client"} }, "several audiences"},
		{"expired ID token", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }, "expired"},
		{"wrong issuer", func(c jwt.MapClaims) { c["iss"] = "https://idp.evil.example" }, "different provider"},
		{"unverified email", func(c jwt.MapClaims) { c["email_verified"] = false }, "not verified"},
		{"no email", func(c jwt.MapClaims) { delete(c, "email") }, "the broker needs an email"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := e.browser()
			u := alice()
			u.email = "forged-" + strings.ReplaceAll(tc.name, " ", "-") + "@example.com"
			u.forge = tc.forge
			resp := b.login("", u)
			wantStatus(t, resp, http.StatusForbidden, tc.want)
			if b.session() != "" {
				t.Errorf("a session was set")
			}
		})
	}
	t.Run("provider error", func(t *testing.T) {
		b := e.browser()
		cb := mustParse(t, b.authorize(b.start(""), alice()))
		q := cb.Query()
		q.Del("code")
		q.Set("error", "access_denied")
		q.Set("error_description", "<script>alert(1)</script>")
		cb.RawQuery = q.Encode()
		resp := b.get(cb.String())
		wantStatus(t, resp, http.StatusForbidden, "access_denied", "&lt;script&gt;")
	})
	t.Run("tampered login cookie", func(t *testing.T) {
		b := e.browser()
		cbURL := b.authorize(b.start(""), alice())
		cu := mustParse(t, cbURL)
		for _, c := range b.jar.Cookies(cu) {
			// Change one base64url character to another valid one.
			v := []byte(c.Value)
			i := len(v) / 2
			if v[i] == 'A' {
				v[i] = 'B'
			} else {
				v[i] = 'A'
			}
			b.jar.SetCookies(cu, []*http.Cookie{{Name: c.Name, Value: string(v), Path: "/auth/callback"}})
		}
		wantStatus(t, b.get(cbURL), http.StatusBadRequest)
	})
	t.Run("login older than ten minutes", func(t *testing.T) {
		b := e.browser()
		cbURL := b.authorize(b.start(""), alice())
		e.clock.Add(11 * time.Minute)
		defer e.clock.Add(-11 * time.Minute)
		wantStatus(t, b.get(cbURL), http.StatusBadRequest)
	})
	e.noSecretsLeaked(t)
}

// TestOpenRedirect: a login returns only to a path of the broker's own
// origin.
func TestOpenRedirect(t *testing.T) {
	e := newLoginEnv(t)
	b := e.browser()
	for _, bad := range []string{
		"//evil.example", "///evil.example", "https://evil.example/", "http:evil.example", "https:/evil.example",
		`/\evil.example`, `\\evil.example`, `/\/evil.example`, "/%5Cevil.example", "/%2F/evil.example", "%2F%2Fevil.example",
		"/%2f%2fevil.example", "/\t/evil.example", "/%09/evil.example", "/\n/evil.example", "javascript:alert(1)",
		"evil.example", "devices", e.srv.URL + "@evil.example/", "http://evil.example" + mustParse(t, e.srv.URL).Host,
		"https://" + mustParse(t, e.srv.URL).Host + "/devices", // our host, other scheme
		"//" + mustParse(t, e.srv.URL).Host + "/devices", "/devices?next=\\\\evil", "/caf\u00e9",
	} {
		t.Run(bad, func(t *testing.T) {
			resp := b.get("/auth/login?" + url.Values{"return": {bad}}.Encode())
			wantStatus(t, resp, http.StatusBadRequest, "must be a path on this site")
		})
	}
	for ret, want := range map[string]string{
		"/devices?site=north&x=%2F%2Fevil":  "/devices?site=north&x=%2F%2Fevil",
		e.srv.URL + "/grants":               "/grants",
		"/auth/callback?code=x":             "/",
		"/login/device?user_code=BCDF-GHJK": "/login/device?user_code=BCDF-GHJK",
	} {
		t.Run(ret, func(t *testing.T) {
			if got := location(t, b.login(ret, alice())); got != want {
				t.Errorf("return %q: redirected to %q, want %q", ret, got, want)
			}
		})
	}
}

func TestMFARequired(t *testing.T) {
	e := newLoginEnv(t, func(c *identity.Config) {
		c.MFA = identity.MFAPolicy{Require: true, ACR: []string{"urn:example:mfa"}}
	})
	ctx := context.Background()

	b := e.browser()
	u := alice()
	u.amr = []string{"pwd"}
	resp := b.login("", u)
	wantStatus(t, resp, http.StatusForbidden, "multi-factor login is required", "amr claim to contain one of mfa, otp, hwk",
		"acr claim to be one of urn:example:mfa", "amr was [pwd]", "acr was absent")
	if b.session() != "" {
		t.Fatalf("a session without MFA")
	}
	if !slices.Contains(e.actions(t), portal.AuditUserLoginRefused) {
		t.Errorf("refusal not audited: %v", e.actions(t))
	}

	for name, set := range map[string]func(*idpUser){
		"amr otp": func(u *idpUser) { u.amr = []string{"pwd", "otp"} },
		"acr":     func(u *idpUser) { u.acr = "urn:example:mfa" },
	} {
		t.Run(name, func(t *testing.T) {
			b := e.browser()
			u := alice()
			set(u)
			location(t, b.login("", u))
			_, tok, err := e.db.Authenticate(ctx, b.session())
			if err != nil {
				t.Fatal(err)
			}
			if !e.portal.MFAAsserted(ctx, tok) {
				t.Errorf("MFAAsserted: false after an MFA login")
			}
			// After a restart, read back from the audit log.
			if !e.restart().MFAAsserted(ctx, tok) {
				t.Errorf("MFAAsserted after restart: false")
			}
		})
	}
	// Automation tokens never count as MFA.
	if _, err := e.db.EnsureUser(ctx, "operator:test", "bot@example.com", nil); err != nil {
		t.Fatal(err)
	}
	_, auto, err := e.db.IssueToken(ctx, "operator:test", "bot@example.com", fieldpass.TokenAutomation, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if e.portal.MFAAsserted(ctx, auto) {
		t.Errorf("automation token counted as MFA")
	}
}

func TestDisabledUserRefused(t *testing.T) {
	e := newLoginEnv(t)
	ctx := context.Background()
	if _, err := e.db.EnsureUser(ctx, "operator:test", "alice@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.SetUserDisabled(ctx, "operator:test", "alice@example.com", true); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	wantStatus(t, b.login("", alice()), http.StatusForbidden, "alice@example.com is disabled")
	if b.session() != "" {
		t.Errorf("a disabled user got a session")
	}
	if acts := e.actions(t); !slices.Contains(acts, portal.AuditUserLoginRefused) || slices.Contains(acts, fieldpass.AuditTokenIssue) {
		t.Errorf("audit %v: want a refused login and no token", acts)
	}
}

// cli is the command line's side of the device flow.
type cli struct {
	t   *testing.T
	e   *loginEnv
	c   *http.Client
	raw []string // every body the CLI received
}

func (c *cli) post(path string, v any) (int, []byte) {
	c.t.Helper()
	var in io.Reader = http.NoBody
	if v != nil {
		b, _ := json.Marshal(v)
		in = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(http.MethodPost, c.e.srv.URL+path, in)
	req.Header.Set("Content-Type", "application/json")
	c.e.mu.Lock()
	c.e.urls = append(c.e.urls, req.URL.String())
	c.e.mu.Unlock()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (c *cli) start() httpapi.DeviceLoginStart {
	c.t.Helper()
	status, b := c.post("/api/v1/login/device", nil)
	var s httpapi.DeviceLoginStart
	if status != http.StatusOK || json.Unmarshal(b, &s) != nil {
		c.t.Fatalf("start: %d %s", status, b)
	}
	return s
}

// poll returns the token, or the error code.
func (c *cli) poll(deviceCode string) (httpapi.DeviceLoginToken, string) {
	c.t.Helper()
	status, b := c.post("/api/v1/login/device/token", httpapi.DeviceLoginPoll{DeviceCode: deviceCode})
	if status == http.StatusOK {
		var tok httpapi.DeviceLoginToken
		if err := json.Unmarshal(b, &tok); err != nil {
			c.t.Fatal(err)
		}
		return tok, ""
	}
	var er tunnel.ErrorResponse
	json.Unmarshal(b, &er)
	if status != http.StatusBadRequest {
		c.t.Fatalf("poll: status %d %s", status, b)
	}
	return httpapi.DeviceLoginToken{}, er.Code
}

func wantPoll(t *testing.T, c *cli, deviceCode, want string) {
	t.Helper()
	if _, got := c.poll(deviceCode); got != want {
		t.Fatalf("poll: got %q, want %q", got, want)
	}
}

var userCodeRE = regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`)

func TestDeviceLogin(t *testing.T) {
	e := newLoginEnv(t)
	ctx := context.Background()
	c := &cli{t: t, e: e}

	s := c.start()
	if !strings.HasPrefix(s.DeviceCode, "fpd_") || len(s.DeviceCode) != 4+43 || !userCodeRE.MatchString(s.UserCode) ||
		s.VerificationURI != e.srv.URL+"/login/device" || s.ExpiresIn != 600 || s.Interval != 5 {
		t.Fatalf("start: %+v", s)
	}
	wantPoll(t, c, s.DeviceCode, "authorization_pending")
	wantPoll(t, c, s.DeviceCode, "slow_down") // at once: too fast
	e.clock.Add(6 * time.Second)              // the interval is now 10s
	wantPoll(t, c, s.DeviceCode, "slow_down")
	e.clock.Add(16 * time.Second)
	wantPoll(t, c, s.DeviceCode, "authorization_pending")

	// The person opens the page: not logged in, so off to the login first.
	b := e.browser()
	page := "/login/device?user_code=" + strings.ToLower(s.UserCode)
	to := location(t, b.get(page))
	// The code is not carried through: it must be typed (issue 10).
	want := "/auth/login?" + url.Values{"return": {"/login/device"}}.Encode()
	if to != want {
		t.Fatalf("not logged in: redirected to %q, want %q", to, want)
	}
	back := location(t, b.get(b.authorize(location(t, b.get(to)), alice())))
	resp := b.get(back)
	wantStatus(t, resp, http.StatusOK, `name="csrf" value="`+b.csrf()+`"`, "alice@example.com", "Type the code")
	wantStatus(t, b.postForm("/login/device", url.Values{"csrf": {b.csrf()}, "user_code": {s.UserCode}, "action": {"review"}}),
		http.StatusOK, `value="`+s.UserCode+`"`, "127.0.0.1", `value="approve"`)
	if resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("the approval page may be framed")
	}

	// CSRF: missing or wrong token is refused, and approves nothing.
	form := url.Values{"user_code": {s.UserCode}, "action": {"approve"}}
	wantStatus(t, b.postForm("/login/device", form), http.StatusForbidden, "CSRF")
	form.Set("csrf", strings.Repeat("A", 43))
	wantStatus(t, b.postForm("/login/device", form), http.StatusForbidden, "CSRF")
	form.Set("csrf", b.csrf())
	wantStatus(t, b.postForm("/login/device", url.Values{"csrf": {b.csrf()}, "user_code": {"BBBB-BBBB"}, "action": {"approve"}}),
		http.StatusNotFound, "No login waits")
	const step = 16 * time.Second // past the interval, now 15s after two slow_downs
	e.clock.Add(step)
	wantPoll(t, c, s.DeviceCode, "authorization_pending")

	// Approved: the next poll gets the token, once.
	wantStatus(t, b.postForm("/login/device", form), http.StatusOK, "Login approved")
	wantStatus(t, b.postForm("/login/device", form), http.StatusNotFound) // used
	e.clock.Add(step)
	tok, code := c.poll(s.DeviceCode)
	if code != "" {
		t.Fatalf("poll after approval: %s", code)
	}
	if tok.Email != "alice@example.com" || !slices.Equal(tok.Roles, []fieldpass.Role{"admin", "approver", "engineer"}) {
		t.Errorf("token for %s %v", tok.Email, tok.Roles)
	}
	u, rec, err := e.db.Authenticate(ctx, tok.Token)
	if err != nil || u.Email != "alice@example.com" || rec.Kind != fieldpass.TokenCLI {
		t.Fatalf("CLI token: %+v %+v %v", u, rec, err)
	}
	if d := rec.ExpiresAt.Sub(time.Now()); d < 11*time.Hour || d > 13*time.Hour {
		t.Errorf("CLI token lasts %s, want 12 hours", d)
	}
	e.clock.Add(step)
	wantPoll(t, c, s.DeviceCode, "expired") // consumed
	if e.portal.MFAAsserted(ctx, rec) {
		t.Errorf("CLI token claims MFA its session did not have")
	}

	// A token cannot approve: only a browser session can.
	s2 := c.start()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/login/device",
		strings.NewReader(url.Values{"user_code": {s2.UserCode}, "action": {"approve"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("approval with a bearer token: %d, want 403", resp.StatusCode)
	}

	// Denied.
	wantStatus(t, b.postForm("/login/device", url.Values{"csrf": {b.csrf()}, "user_code": {s2.UserCode}, "action": {"deny"}}),
		http.StatusOK, "Login denied")
	e.clock.Add(10 * time.Second)
	wantPoll(t, c, s2.DeviceCode, "denied")
	wantPoll(t, c, s2.DeviceCode, "expired")

	// Expired: ten minutes pass, then nothing works.
	s3 := c.start()
	e.clock.Add(10*time.Minute + time.Second)
	wantStatus(t, b.postForm("/login/device", url.Values{"csrf": {b.csrf()}, "user_code": {s3.UserCode}, "action": {"approve"}}),
		http.StatusNotFound)
	wantPoll(t, c, s3.DeviceCode, "expired")
	wantPoll(t, c, "fpd_"+strings.Repeat("A", 43), "expired")

	// Login through the device flow is recorded, with the approving session.
	evs, err := e.db.AuditEvents(ctx, fieldpass.AuditFilter{Action: portal.AuditUserLogin})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, ev := range evs {
		if ev.Details["method"] == "device" && ev.Details["token_id"] == rec.ID && ev.Details["approved_by"] != "" {
			found = true
		}
	}
	if !found {
		t.Errorf("no user.login event for the CLI token: %+v", evs)
	}
	e.noSecretsLeaked(t, tok.Token, s.DeviceCode, s2.DeviceCode, b.session())
}

// TestDeviceLoginMFAInherited: a CLI token approved by an MFA session
// asserts MFA; with MFA required, a session without it cannot approve.
func TestDeviceLoginMFAInherited(t *testing.T) {
	e := newLoginEnv(t)
	ctx := context.Background()
	c := &cli{t: t, e: e}
	s := c.start()
	b := e.browser()
	u := alice()
	u.amr = []string{"hwk"}
	location(t, b.login("", u))
	wantStatus(t, b.postForm("/login/device", url.Values{"csrf": {b.csrf()}, "user_code": {s.UserCode}, "action": {"approve"}}), http.StatusOK)
	tok, code := c.poll(s.DeviceCode)
	if code != "" {
		t.Fatal(code)
	}
	_, rec, err := e.db.Authenticate(ctx, tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	if !e.portal.MFAAsserted(ctx, rec) || !e.restart().MFAAsserted(ctx, rec) {
		t.Errorf("CLI token approved by an MFA session: MFAAsserted false")
	}
}

func TestLoginNotConfigured(t *testing.T) {
	db, err := postgres.Open(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	srv := httptest.NewServer(apiserver.New(apiserver.Config{DB: db}).Handler())
	t.Cleanup(srv.Close)
	for _, path := range []string{"/auth/login", "/auth/callback?state=x&code=y", "/login/device"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
	resp, err := http.Post(srv.URL+"/api/v1/login/device", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("device login start: %d, want 503", resp.StatusCode)
	}
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestCustomClaims: the email and groups claims are configurable, and a
// dotted groups claim reads nested objects (Keycloak's realm_access.roles).
func TestCustomClaims(t *testing.T) {
	e := newLoginEnv(t, func(c *identity.Config) {
		c.EmailClaim, c.GroupsClaim = "upn", "realm_access.roles"
		c.Scopes = []string{"openid", "profile"}
	})
	b := e.browser()
	authURL := b.start("")
	if got := mustParse(t, authURL).Query().Get("scope"); got != "openid profile" {
		t.Errorf("scope %q, want the configured ones", got)
	}
	u := &idpUser{sub: "carol-1", email: "not-this@example.com", forge: func(c jwt.MapClaims) {
		c["upn"] = "Carol@Example.com"
		c["realm_access"] = map[string]any{"roles": []string{"field-eng"}}
	}}
	location(t, b.get(b.authorize(authURL, u)))
	got, _, err := e.db.Authenticate(context.Background(), b.session())
	if err != nil || got.Email != "carol@example.com" || !slices.Equal(got.Roles, []fieldpass.Role{"engineer"}) {
		t.Errorf("custom claims: %+v, %v; want carol@example.com, an engineer", got, err)
	}
}
