package devidp_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/html"
	"golang.org/x/oauth2"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/devidp"
	"github.com/fieldpass/fieldpass/identity"
)

// callback is a relying party's redirect URI: it records what the
// provider sent the browser back with.
type callback struct {
	url string
	mu  sync.Mutex
	got []url.Values
}

func newCallback(t *testing.T) *callback {
	t.Helper()
	c := &callback{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.got = append(c.got, r.URL.Query())
		c.mu.Unlock()
		io.WriteString(w, "back at the client")
	}))
	t.Cleanup(srv.Close)
	c.url = srv.URL + "/auth/callback"
	return c
}

func (c *callback) calls() []url.Values {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// startIDP serves a provider on a loopback port and returns its issuer.
func startIDP(t *testing.T, users []devidp.User, clients ...devidp.Client) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	srv, err := devidp.New(devidp.Config{Issuer: issuer, Users: users, Clients: clients})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return issuer
}

func testUsers(t *testing.T) []devidp.User {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("bob-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return []devidp.User{
		{Email: "Alice@Example.com", Name: "Alice Admin", Password: "alice-password", Groups: []string{"fp-admins", "staff"}, AMR: []string{"pwd", "otp"}},
		{Email: "bob@example.com", PasswordBcrypt: string(hash), Groups: []string{"field-eng"}},
	}
}

// browser is what a person's browser does: cookies, redirects, forms.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

// form is a login form as the page shows it.
type form struct {
	action string
	fields url.Values // hidden inputs
	labels map[string]string
	inputs map[string]string // id -> name
	hasBtn bool
	error  string
	script bool
}

// readForm parses the login page and checks what every page must have:
// no script, and a label for each visible input.
func readForm(t *testing.T, base *url.URL, body io.Reader) *form {
	t.Helper()
	doc, err := html.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	f := &form{fields: url.Values{}, labels: map[string]string{}, inputs: map[string]string{}}
	attr := func(n *html.Node, k string) string {
		for _, a := range n.Attr {
			if a.Key == k {
				return a.Val
			}
		}
		return ""
	}
	var text func(n *html.Node) string
	text = func(n *html.Node) string {
		if n.Type == html.TextNode {
			return n.Data
		}
		var s string
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			s += text(c)
		}
		return s
	}
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		switch n.Data {
		case "form":
			a, err := base.Parse(attr(n, "action"))
			if err != nil {
				t.Fatal(err)
			}
			f.action = a.String()
		case "input":
			if attr(n, "type") == "hidden" {
				f.fields.Set(attr(n, "name"), attr(n, "value"))
			} else {
				f.inputs[attr(n, "id")] = attr(n, "name")
			}
		case "label":
			f.labels[attr(n, "for")] = strings.TrimSpace(text(n))
		case "button":
			f.hasBtn = attr(n, "type") == "submit"
		case "script":
			f.script = true
		case "p":
			if strings.Contains(attr(n, "class"), "error") {
				f.error = strings.TrimSpace(text(n))
			}
		}
	}
	if f.action == "" {
		t.Fatal("no form on the page")
	}
	if f.script {
		t.Error("the login page has a script")
	}
	if !f.hasBtn {
		t.Error("the login form has no submit button")
	}
	for id := range f.inputs {
		if f.labels[id] == "" {
			t.Errorf("input %q has no <label for>", id)
		}
	}
	return f
}

// field returns the name of the input labelled label, as a person (or
// chromedp) finds it.
func (f *form) field(t *testing.T, label string) string {
	t.Helper()
	for id, l := range f.labels {
		if l == label {
			return f.inputs[id]
		}
	}
	t.Fatalf("no input labelled %q (labels: %v)", label, f.labels)
	return ""
}

// getForm follows authURL to the login page.
func getForm(t *testing.T, b *http.Client, authURL string) *form {
	t.Helper()
	resp, err := b.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET authorize: %s: %s", resp.Status, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("login page CSP = %q, want default-src 'none'", csp)
	}
	return readForm(t, resp.Request.URL, resp.Body)
}

// submit posts the login form with email and password.
func submit(t *testing.T, b *http.Client, f *form, email, password string) *http.Response {
	t.Helper()
	v := url.Values{}
	for k, vs := range f.fields {
		v[k] = vs
	}
	v.Set(f.field(t, "Email"), email)
	v.Set(f.field(t, "Password"), password)
	resp, err := b.PostForm(f.action, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

type login struct {
	cfg      *oauth2.Config
	provider *oidc.Provider
	state    string
	nonce    string
	verifier string
	authURL  string
}

func newLogin(t *testing.T, issuer, clientID, secret, redirect string) *login {
	t.Helper()
	p, err := oidc.NewProvider(t.Context(), issuer)
	if err != nil {
		t.Fatal(err)
	}
	l := &login{
		cfg: &oauth2.Config{
			ClientID: clientID, ClientSecret: secret, Endpoint: p.Endpoint(), RedirectURL: redirect,
			Scopes: []string{oidc.ScopeOpenID, "email", "profile", "groups"},
		},
		provider: p,
		state:    oauth2.GenerateVerifier(),
		nonce:    oauth2.GenerateVerifier(),
		verifier: oauth2.GenerateVerifier(),
	}
	l.authURL = l.cfg.AuthCodeURL(l.state, oidc.Nonce(l.nonce), oauth2.S256ChallengeOption(l.verifier))
	return l
}

// code logs in through the form and returns the code the client got.
func (l *login) code(t *testing.T, cb *callback, email, password string) string {
	t.Helper()
	b := browser(t)
	resp := submit(t, b, getForm(t, b, l.authURL), email, password)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Host != mustURL(t, cb.url).Host {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("after the login form: %s at %s, want 200 at the callback: %s", resp.Status, resp.Request.URL, body)
	}
	calls := cb.calls()
	q := calls[len(calls)-1]
	if got := q.Get("state"); got != l.state {
		t.Fatalf("state = %q, want %q", got, l.state)
	}
	if q.Get("code") == "" {
		t.Fatalf("no code at the callback: %v", q)
	}
	return q.Get("code")
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

type idClaims struct {
	Email         string   `json:"email"`
	EmailVerified bool     `json:"email_verified"`
	Name          string   `json:"name"`
	Groups        []string `json:"groups"`
	AMR           []string `json:"amr"`
}

func TestCodeFlow(t *testing.T) {
	cb := newCallback(t)
	issuer := startIDP(t, testUsers(t),
		devidp.Client{ID: "fieldpass", Secret: "s3cret", RedirectURIs: []string{cb.url}},
		devidp.Client{ID: "cli", RedirectURIs: []string{cb.url}})

	for _, tc := range []struct {
		name, client, secret string
		style                oauth2.AuthStyle
		email, password      string
		want                 idClaims
	}{
		{"client_secret_basic", "fieldpass", "s3cret", oauth2.AuthStyleInHeader, "alice@example.com", "alice-password",
			idClaims{"alice@example.com", true, "Alice Admin", []string{"fp-admins", "staff"}, []string{"pwd", "otp"}}},
		{"client_secret_post", "fieldpass", "s3cret", oauth2.AuthStyleInParams, "ALICE@example.com", "alice-password",
			idClaims{"alice@example.com", true, "Alice Admin", []string{"fp-admins", "staff"}, []string{"pwd", "otp"}}},
		{"public client, bcrypt password", "cli", "", oauth2.AuthStyleInParams, "bob@example.com", "bob-password",
			idClaims{"bob@example.com", true, "bob@example.com", []string{"field-eng"}, []string{"pwd"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLogin(t, issuer, tc.client, tc.secret, cb.url)
			l.cfg.Endpoint.AuthStyle = tc.style
			code := l.code(t, cb, tc.email, tc.password)

			if _, err := l.cfg.Exchange(t.Context(), code); err == nil {
				t.Fatal("exchange without the PKCE verifier succeeded")
			}
			code = l.code(t, cb, tc.email, tc.password)
			tok, err := l.cfg.Exchange(t.Context(), code, oauth2.VerifierOption(l.verifier))
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			raw, _ := tok.Extra("id_token").(string)
			idt, err := l.provider.Verifier(&oidc.Config{ClientID: tc.client}).Verify(t.Context(), raw)
			if err != nil {
				t.Fatalf("verify ID token: %v", err)
			}
			if idt.Nonce != l.nonce {
				t.Errorf("nonce = %q, want %q", idt.Nonce, l.nonce)
			}
			if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
				t.Errorf("at_hash: %v", err)
			}
			var got idClaims
			if err := idt.Claims(&got); err != nil {
				t.Fatal(err)
			}
			if got.Email != tc.want.Email || !got.EmailVerified || got.Name != tc.want.Name || !slices.Equal(got.Groups, tc.want.Groups) || !slices.Equal(got.AMR, tc.want.AMR) {
				t.Errorf("ID token claims = %+v, want %+v", got, tc.want)
			}

			ui, err := l.provider.UserInfo(t.Context(), oauth2.StaticTokenSource(tok))
			if err != nil {
				t.Fatalf("userinfo: %v", err)
			}
			var uig idClaims
			if err := ui.Claims(&uig); err != nil {
				t.Fatal(err)
			}
			if ui.Subject != idt.Subject || uig.Email != tc.want.Email || !slices.Equal(uig.Groups, tc.want.Groups) {
				t.Errorf("userinfo = sub %q %+v, want sub %q and the ID token's email and groups", ui.Subject, uig, idt.Subject)
			}

			if _, err := l.cfg.Exchange(t.Context(), code, oauth2.VerifierOption(l.verifier)); err == nil {
				t.Error("a code was redeemed twice")
			}
		})
	}
}

func TestWrongSecret(t *testing.T) {
	cb := newCallback(t)
	issuer := startIDP(t, testUsers(t), devidp.Client{ID: "fieldpass", Secret: "s3cret", RedirectURIs: []string{cb.url}})
	l := newLogin(t, issuer, "fieldpass", "not-the-secret", cb.url)
	code := l.code(t, cb, "alice@example.com", "alice-password")
	_, err := l.cfg.Exchange(t.Context(), code, oauth2.VerifierOption(l.verifier))
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("exchange with a wrong secret: %v, want invalid_client", err)
	}
}

func TestWrongPassword(t *testing.T) {
	cb := newCallback(t)
	issuer := startIDP(t, testUsers(t), devidp.Client{ID: "fieldpass", Secret: "s3cret", RedirectURIs: []string{cb.url}})
	l := newLogin(t, issuer, "fieldpass", "s3cret", cb.url)
	b := browser(t)
	f := getForm(t, b, l.authURL)

	var msgs []string
	for _, try := range []struct{ email, password string }{
		{"alice@example.com", "wrong"},
		{"nobody@example.com", "alice-password"},
		{"bob@example.com", "alice-password"},
	} {
		resp := submit(t, b, f, try.email, try.password)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s with a wrong password: %s, want 403 and the form", try.email, resp.Status)
		}
		again := readForm(t, resp.Request.URL, resp.Body)
		if again.error == "" {
			t.Fatalf("%s: the form came back without an error message", try.email)
		}
		msgs = append(msgs, again.error)
		f = again
	}
	if msgs[0] != msgs[1] || msgs[1] != msgs[2] {
		t.Errorf("error messages differ by case, telling which of email and password was wrong: %q", msgs)
	}
	if n := len(cb.calls()); n != 0 {
		t.Fatalf("the client was called %d times after wrong passwords", n)
	}

	// The same form then takes the right password.
	resp := submit(t, b, f, "alice@example.com", "alice-password")
	if resp.StatusCode != http.StatusOK || len(cb.calls()) != 1 {
		t.Fatalf("right password after wrong ones: %s at %s", resp.Status, resp.Request.URL)
	}
}

func TestRefusedAuthorizeRequests(t *testing.T) {
	cb := newCallback(t)
	issuer := startIDP(t, testUsers(t), devidp.Client{ID: "fieldpass", Secret: "s3cret", RedirectURIs: []string{cb.url}})
	for _, tc := range []struct{ name, client, redirect string }{
		{"unknown client", "someone-else", cb.url},
		{"unregistered redirect URI", "fieldpass", strings.Replace(cb.url, "/auth/callback", "/elsewhere", 1)},
		{"redirect URI on another host", "fieldpass", "http://attacker.example/auth/callback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLogin(t, issuer, tc.client, "s3cret", tc.redirect)
			b := browser(t)
			b.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			resp, err := b.Get(l.authURL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
				t.Errorf("authorize: %s, Location %q; want 400 and no redirect", resp.Status, resp.Header.Get("Location"))
			}
			if n := len(cb.calls()); n != 0 {
				t.Errorf("the client was called %d times", n)
			}
		})
	}
}

// TestIdentity logs in with the broker's own relying party.
func TestIdentity(t *testing.T) {
	cb := newCallback(t)
	issuer := startIDP(t, testUsers(t), devidp.Client{ID: "fieldpass", Secret: "s3cret", RedirectURIs: []string{cb.url}})
	roles, err := identity.ParseRoleMap([]string{"admin=fp-admins", "engineer=field-eng"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := identity.New(identity.Config{
		Issuer: issuer, ClientID: "fieldpass", ClientSecret: "s3cret", RedirectURL: cb.url,
		Roles: roles, MFA: identity.MFAPolicy{Require: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		email, password string
		roles           []fieldpass.Role
		mfa             bool
	}{
		{"alice@example.com", "alice-password", []fieldpass.Role{"admin"}, true},
		{"bob@example.com", "bob-password", []fieldpass.Role{"engineer"}, false},
	} {
		t.Run(tc.email, func(t *testing.T) {
			state, nonce, verifier := oauth2.GenerateVerifier(), oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
			authURL, err := p.AuthCodeURL(t.Context(), state, nonce, verifier)
			if err != nil {
				t.Fatal(err)
			}
			l := &login{state: state, authURL: authURL}
			code := l.code(t, cb, tc.email, tc.password)
			if _, err := p.Exchange(t.Context(), code, verifier, "another-nonce"); err == nil {
				t.Fatal("Exchange accepted a wrong nonce")
			}
			code = l.code(t, cb, tc.email, tc.password)
			id, err := p.Exchange(t.Context(), code, verifier, nonce)
			if err != nil {
				t.Fatal(err)
			}
			if id.Email != tc.email || id.Issuer != issuer || !slices.Equal(id.Roles, tc.roles) || id.MFA != tc.mfa {
				t.Errorf("identity = %+v, want %s, roles %v, MFA %v", id, tc.email, tc.roles, tc.mfa)
			}
			if err := p.MFA().Check(id); (err == nil) != tc.mfa {
				t.Errorf("MFA check: %v, want refused = %v", err, !tc.mfa)
			}
		})
	}
}

func TestParseUsers(t *testing.T) {
	users, err := devidp.ParseUsers(strings.NewReader(`[{"email":" Alice@Example.com ","password":"x","groups":["a"]}]`))
	if err != nil {
		t.Fatal(err)
	}
	if u := users[0]; u.Email != "alice@example.com" || u.Name != "alice@example.com" || u.Subject == "" || !slices.Equal(u.AMR, []string{"pwd"}) {
		t.Errorf("defaults: %+v", u)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"not an array", `{"email":"a@b.c"}`, "JSON array"},
		{"empty", `[]`, "no users"},
		{"unknown field", `[{"email":"a@b.c","passwd":"x"}]`, "passwd"},
		{"no password", `[{"email":"a@b.c"}]`, "exactly one of password"},
		{"two passwords", `[{"email":"a@b.c","password":"x","password_bcrypt":"y"}]`, "exactly one of password"},
		{"bad bcrypt", `[{"email":"a@b.c","password_bcrypt":"plain"}]`, "not a bcrypt hash"},
		{"no email", `[{"password":"x"}]`, "email"},
		{"twice", `[{"email":"a@b.c","password":"x"},{"email":"A@b.c","password":"y"}]`, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := devidp.ParseUsers(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestLoginPageUnknownRequest(t *testing.T) {
	cb := newCallback(t)
	issuer := startIDP(t, testUsers(t), devidp.Client{ID: "fieldpass", Secret: "s3cret", RedirectURIs: []string{cb.url}})
	resp, err := http.Get(issuer + "/login?authRequestID=made-up")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("login page for an unknown request: %s, want 400", resp.Status)
	}
}

func TestNewRefuses(t *testing.T) {
	users := []devidp.User{{Email: "a@example.com", Password: "x"}}
	clients := []devidp.Client{{ID: "c", RedirectURIs: []string{"http://127.0.0.1:8080/auth/callback"}}}
	for _, tc := range []struct {
		name string
		cfg  devidp.Config
		want string
	}{
		{"issuer with a path", devidp.Config{Issuer: "http://127.0.0.1:9998/idp", Users: users, Clients: clients}, "without a path"},
		{"issuer with a trailing slash", devidp.Config{Issuer: "http://127.0.0.1:9998/", Users: users, Clients: clients}, "without a path"},
		{"no users", devidp.Config{Issuer: "http://127.0.0.1:9998", Clients: clients}, "no users"},
		{"no clients", devidp.Config{Issuer: "http://127.0.0.1:9998", Users: users}, "no clients"},
		{"client without redirect URI", devidp.Config{Issuer: "http://127.0.0.1:9998", Users: users, Clients: []devidp.Client{{ID: "c"}}}, "no redirect URI"},
		{"relative redirect URI", devidp.Config{Issuer: "http://127.0.0.1:9998", Users: users, Clients: []devidp.Client{{ID: "c", RedirectURIs: []string{"/cb"}}}}, "absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := devidp.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
