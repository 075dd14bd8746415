//go:build linux

package e2e_test

import (
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"
)

// idp is a real OpenID provider (mockoidc) in the test process, on a
// loopback port; the broker subprocess discovers it and exchanges codes
// with it like any provider. Who logs in next is queued with login.
type idp struct {
	m          *mockoidc.MockOIDC
	secretFile string // the client secret, for --oidc-client-secret-file
}

func startIDP(t *testing.T) *idp {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	// mockoidc's session store has no lock of its own.
	var mu sync.Mutex
	m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			next.ServeHTTP(w, r)
		})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	p := &idp{m: m, secretFile: filepath.Join(t.TempDir(), "oidc-client-secret")}
	if err := os.WriteFile(p.secretFile, []byte(m.ClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// brokerFlags are serve's flags for logging in through this provider.
func (p *idp) brokerFlags(roleMap ...string) []string {
	args := []string{
		"--oidc-issuer", p.m.Issuer(),
		"--oidc-client-id", p.m.ClientID,
		"--oidc-client-secret-file", p.secretFile,
	}
	for _, rm := range roleMap {
		args = append(args, "--role-map", rm)
	}
	return args
}

// webBrowser is a person's browser: it keeps cookies and follows
// redirects, remembering every address it went through.
type webBrowser struct {
	c    *http.Client
	mu   sync.Mutex
	hops []string
}

func newWebBrowser() *webBrowser {
	jar, _ := cookiejar.New(nil)
	b := &webBrowser{}
	b.c = &http.Client{
		Jar:       jar,
		Timeout:   30 * time.Second,
		Transport: &http.Transport{Proxy: nil},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			b.mu.Lock()
			b.hops = append(b.hops, req.URL.String())
			b.mu.Unlock()
			if len(via) >= 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	return b
}

// do sends req and returns the final status and body.
func (b *webBrowser) do(t *testing.T, req *http.Request) (int, string, *url.URL) {
	t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Request.URL
}

// takeHops returns the redirects followed since the last call.
func (b *webBrowser) takeHops() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.hops
	b.hops = nil
	return h
}

var (
	loginPromptRE = regexp.MustCompile(`^To log in, open (\S+) and enter the code ([A-Z]{4}-[A-Z]{4})\n`)
	csrfFieldRE   = regexp.MustCompile(`name="csrf" value="([A-Za-z0-9_-]+)"`)
)

// cliLogin is `fieldpass login --broker URL` run by a person: the CLI
// prints a URL and a code; the person opens the URL in a browser, logs in at
// the identity provider as who, and approves the code; the CLI finishes by
// itself. It returns what the CLI printed after the URL and code.
func cliLogin(t *testing.T, p *idp, brokerURL string, environ []string, who mockoidc.User) string {
	t.Helper()
	start := time.Now()
	cli := startCmd(t, environ, bins.cli, "login", "--broker", brokerURL)
	m := cli.waitOutput(t, 20*time.Second, loginPromptRE)
	verify, code := m[1], m[2]
	if want := brokerURL + "/login/device"; verify != want {
		t.Errorf("login printed the verification URL %q, want %q", verify, want)
	}

	// Not logged in to the portal yet: the page sends the browser through
	// the broker's login to the provider and back.
	b := newWebBrowser()
	p.m.QueueUser(who)
	req, _ := http.NewRequest(http.MethodGet, verify, nil)
	status, body, final := b.do(t, req)
	hops := b.takeHops()
	if status != http.StatusOK || final.Path != "/login/device" {
		t.Fatalf("GET %s: ended at %s with status %d after %q:\n%s", verify, final, status, hops, body)
	}
	wantHops := []string{brokerURL + "/auth/login?", p.m.AuthorizationEndpoint() + "?", brokerURL + "/auth/callback?", brokerURL + "/login/device"}
	if len(hops) != len(wantHops) {
		t.Fatalf("the browser went through %q, want /auth/login, the provider, /auth/callback, /login/device", hops)
	}
	for i, h := range hops {
		if !strings.HasPrefix(h, wantHops[i]) {
			t.Errorf("redirect %d went to %q, want %s...", i+1, h, wantHops[i])
		}
		if strings.Contains(h, "fpt_") || strings.Contains(h, "fpd_") {
			t.Errorf("a token travelled in a URL: %s", h)
		}
	}
	csrf := csrfFieldRE.FindStringSubmatch(body)
	if csrf == nil {
		t.Fatalf("the approval page has no csrf field:\n%s", body)
	}

	form := url.Values{"csrf": {csrf[1]}, "user_code": {code}, "action": {"approve"}}
	req, _ = http.NewRequest(http.MethodPost, brokerURL+"/login/device", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", brokerURL)
	if status, body, _ := b.do(t, req); status != http.StatusOK || !strings.Contains(body, "Login approved") {
		t.Fatalf("approving %s: status %d:\n%s", code, status, body)
	}

	cli.wait(t, 30*time.Second)
	if cli.code != 0 {
		t.Fatalf("fieldpass login: exit %d\nstdout: %q\nstderr: %q", cli.code, cli.stdout, cli.stderr)
	}
	out := strings.TrimPrefix(cli.stdout.String(), m[0])
	if strings.Contains(cli.stdout.String()+cli.stderr.String(), "fpt_") {
		t.Errorf("fieldpass login printed its token")
	}
	t.Logf("fieldpass login finished %s after it started (it polls every 5 s)", time.Since(start).Round(time.Millisecond))
	return out
}
