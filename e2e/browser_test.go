//go:build linux

package e2e_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser side, tested as people use it: headless Chromium (Debian's
// chromium, driven over the DevTools protocol by chromedp) against the real
// broker binary, logging in at the development OIDC provider
// (fieldpass-devidp) by typing into its login form.

// chromiumPath is Debian's Chromium; .ci/run installs it.
const chromiumPath = "/usr/bin/chromium"

// idpUser is a login of the development provider's users file.
type idpUser struct {
	Email    string   `json:"email"`
	Name     string   `json:"name"`
	Password string   `json:"password"`
	Groups   []string `json:"groups,omitempty"`
	AMR      []string `json:"amr,omitempty"`
}

// The portal's people, one per role; their groups map to roles through
// devIDP.brokerFlags.
var (
	adminPerson    = idpUser{Email: "admin@example.com", Name: "Ada Admin", Password: "admin-pw-1", Groups: []string{"fp-admins"}, AMR: []string{"pwd", "otp"}}
	engineerPerson = idpUser{Email: "engineer@example.com", Name: "Eve Engineer", Password: "engineer-pw-1", Groups: []string{"field-eng"}, AMR: []string{"pwd", "otp"}}
	approverPerson = idpUser{Email: "approver@example.com", Name: "Abe Approver", Password: "approver-pw-1", Groups: []string{"fp-approvers"}}
	auditorPerson  = idpUser{Email: "auditor@example.com", Name: "Aude Auditor", Password: "auditor-pw-1", Groups: []string{"fp-auditors"}}
	vendorPerson   = idpUser{Email: "vendor@acme.example", Name: "Victor Vendor", Password: "vendor-pw-1"}
)

// devIDP is a fieldpass-devidp process: a real OpenID provider with a login
// form, its users from a file the test wrote.
type devIDP struct {
	issuer     string
	secretFile string
}

// startDevIDP starts the development provider for a broker whose URL is
// brokerURL (its redirect URI is brokerURL/auth/callback).
func startDevIDP(t *testing.T, brokerURL string, people ...idpUser) *devIDP {
	t.Helper()
	dir := t.TempDir()
	users, err := json.Marshal(people)
	if err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(dir, "users.json")
	secretFile := filepath.Join(dir, "client-secret")
	if err := os.WriteFile(usersFile, users, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretFile, []byte("e2e-client-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t, "tcp")
	p := startProc(t, "fieldpass-devidp", filepath.Join(dir, "devidp.log"), env(), bins.devidp,
		"--listen", addr, "--users", usersFile, "--client-id", "fieldpass",
		"--client-secret-file", secretFile, "--redirect-uri", brokerURL+"/auth/callback")
	p.waitLog(t, 20*time.Second, regexp.MustCompile(`issuer http://`))
	return &devIDP{issuer: "http://" + addr, secretFile: secretFile}
}

// brokerFlags are serve's flags for logging people in through this
// provider, with each test idpUser's group mapped to their role.
func (p *devIDP) brokerFlags() []string {
	return []string{
		"--oidc-issuer", p.issuer,
		"--oidc-client-id", "fieldpass",
		"--oidc-client-secret-file", p.secretFile,
		"--role-map", "admin=fp-admins", "--role-map", "approver=fp-admins",
		"--role-map", "engineer=field-eng", "--role-map", "approver=fp-approvers",
		"--role-map", "auditor=fp-auditors",
	}
}

// startPortalBroker starts a broker whose people log in at a development
// provider knowing people.
func startPortalBroker(t *testing.T, people ...idpUser) (*broker, *devIDP) {
	t.Helper()
	httpAddr := freeAddr(t, "tcp")
	idp := startDevIDP(t, "http://"+httpAddr, people...)
	return startBrokerAt(t, httpAddr, idp.brokerFlags()...), idp
}

// startPortalBrokerOn is startPortalBroker with the public URL on host
// (such as localhost) instead of the loopback address.
func startPortalBrokerOn(t *testing.T, host string, people ...idpUser) (*broker, *devIDP) {
	t.Helper()
	httpAddr := freeAddr(t, "tcp")
	_, port, _ := net.SplitHostPort(httpAddr)
	public := "http://" + net.JoinHostPort(host, port)
	idp := startDevIDP(t, public, people...)
	return startBrokerAt(t, httpAddr, append(idp.brokerFlags(), "--public-url", public)...), idp
}

// chrome is one idpUser's browser: a headless Chromium with a profile of its
// own. Screenshots go to the test's output directory.
type chrome struct {
	t   *testing.T
	ctx context.Context
}

// newChrome starts Chromium; the test is skipped where it is not installed,
// except in CI, which installs it.
func newChrome(t *testing.T) *chrome {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing: .ci/run installs Debian's chromium", chromiumPath)
		}
		t.Skipf("%s is not installed (apt-get install chromium)", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		// This machine reaches no other host: nothing may try.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); acancel() })
	// The first action starts the browser, under no deadline: one would
	// stop the whole browser when it passed.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &chrome{t: t, ctx: ctx}
}

// run runs actions with a deadline, failing the test with what the page
// showed when one does not complete.
func (c *chrome) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		c.t.Fatalf("%s: %v\npage %s:\n%s", what, err, c.location(), tail(c.text(), 20))
	}
}

func (c *chrome) location() string {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	u, _ := chromedp.Run(ctx, chromedp.Location())
	return u
}

// text is the visible text of the page.
func (c *chrome) text() string {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	return s
}

// press clicks the first element sel matches in one script, as a live page
// (main[data-refresh]) may replace its nodes between a query and a click
// by node.
func (c *chrome) press(what, sel string) {
	c.t.Helper()
	c.pressWith(what, sel, "")
}

// openHere presses the "Open ..." button sel matches in this tab rather
// than a new one: its form's target is removed in the same script.
func (c *chrome) openHere(what, sel string) {
	c.t.Helper()
	c.pressWith(what, sel, `b.form.removeAttribute("target");`)
}

func (c *chrome) pressWith(what, sel, before string) {
	c.t.Helper()
	q, err := json.Marshal(sel)
	if err != nil {
		c.t.Fatal(err)
	}
	if !eval(c, what, chromedp.Evaluate[bool](`(b => { if (!b) return false; `+before+` b.click(); return true })(document.querySelector(`+string(q)+`))`)) {
		c.t.Fatalf("%s: no %s on the page:\n%s", what, sel, tail(c.text(), 20))
	}
}

// eval runs one action that returns a value, failing the test as run does.
func eval[T any](c *chrome, what string, a chromedp.Action[T]) T {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		c.t.Fatalf("%s: %v\npage %s:\n%s", what, err, c.location(), tail(c.text(), 20))
	}
	return v
}

// screenshot saves the page as name.png in the test's output directory,
// at the window size in effect.
func (c *chrome) screenshot(name string) {
	c.t.Helper()
	png := eval(c, "screenshot "+name, chromedp.CaptureScreenshot())
	dir := os.Getenv("FIELDPASS_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "fieldpass-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	path := filepath.Join(dir, strings.ReplaceAll(c.t.Name(), "/", "_")+"-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.t.Logf("screenshot: %s", path)
}

// logInAt types who's email and password into the provider's login form,
// which the browser must be showing.
func (c *chrome) logInAt(idp *devIDP, who idpUser) {
	c.t.Helper()
	c.run("the provider's login form",
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SendKeys(chromedp.ID("username"), who.Email),
		chromedp.SendKeys(chromedp.ID("password"), who.Password),
		chromedp.Click(chromedp.ID("submit")),
	)
	if u := c.location(); strings.HasPrefix(u, idp.issuer) {
		// Still at the provider: wait for it to send the browser back.
		c.run("back from the provider", chromedp.WaitNotPresent(chromedp.ID("password")))
	}
}

// TestPortalCLILoginApproval: `fieldpass login` prints the approval page's
// address and a code; a idpUser opens it in a real browser, is sent through
// the provider's login form, types the code and approves; the CLI finishes
// logged in as that idpUser with their roles, and no token appears in any
// address the browser visited.
func TestPortalCLILoginApproval(t *testing.T) {
	t.Parallel()
	b, idp := startPortalBroker(t, engineerPerson)
	c := newChrome(t)

	cli := startCmd(t, env("HOME="+t.TempDir()), bins.cli, "login", "--broker", b.URL())
	m := cli.waitOutput(t, 20*time.Second, loginPromptRE)
	verify, code := m[1], m[2]

	c.run("open "+verify, chromedp.Navigate(verify))
	c.logInAt(idp, engineerPerson)
	c.run("the approval page",
		chromedp.WaitVisible(chromedp.CSS(`input[name=user_code]`)),
	)
	c.screenshot("approval")
	if got := c.text(); !strings.Contains(got, engineerPerson.Email) {
		t.Errorf("the approval page does not say who the CLI will act as:\n%s", got)
	}
	// The code is typed, then the login it names is shown for review.
	c.run("review "+code,
		chromedp.SendKeys(chromedp.CSS(`input[name=user_code]`), code),
		chromedp.Click(chromedp.CSS(`button[value=review]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[value=approve]`)),
	)
	if got := c.text(); !strings.Contains(got, "Started from") || !strings.Contains(got, "fieldpass/") {
		t.Errorf("the review page does not say what is approved:\n%s", got)
	}
	c.run("approve "+code,
		chromedp.Click(chromedp.CSS(`button[value=approve]`)),
		chromedp.WaitVisible(chromedp.Search(`//h1[contains(., "Login approved")]`)),
	)

	cli.wait(t, 30*time.Second)
	if cli.code != 0 {
		t.Fatalf("fieldpass login: exit %d\nstdout: %q\nstderr: %q", cli.code, cli.stdout, cli.stderr)
	}
	if out := cli.stdout.String(); !strings.Contains(out, engineerPerson.Email) || !strings.Contains(out, "engineer") {
		t.Errorf("fieldpass login printed %q, want it logged in as %s (engineer)", out, engineerPerson.Email)
	}
	history := eval(c, "history", chromedp.Evaluate[[]string](`performance.getEntriesByType("navigation").map(e => e.name)`))
	for _, u := range append(history, c.location()) {
		if strings.Contains(u, "fpt_") || strings.Contains(u, "fpd_") {
			t.Errorf("a token travelled in an address: %s", u)
		}
	}
}
