//go:build linux

package e2e_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// xssReason is a grant reason that would run script if any page put it in
// the document unescaped.
const xssReason = `<img src=x onerror="document.title='pwned'"> pump check`

// TestPortalPeople: the portal as each role uses it, in real browsers logged
// in at the development provider's form, on a real broker with a device
// behind a real connector. An admin grants the engineer access (the reason
// carries markup that must stay text); the engineer's CLI session is live;
// a vendor sees nothing, asks for another device and an approver approves;
// the vendor then sees that device only; an auditor filters sessions,
// exports them and finds the audit chain intact; the admin revokes the
// engineer's grant and the page says the live session was closed, which the
// engineer's CLI reports. Every page is checked with axe-core and saved as
// a screenshot at desktop and phone sizes.
func TestPortalPeople(t *testing.T) {
	t.Parallel()
	b, idp := startPortalBroker(t, adminPerson, engineerPerson, approverPerson, auditorPerson, vendorPerson)

	pumpDir := b.enroll("pump-7")
	if r := enrollCmd(t, b.URL(), b.token("gw-1", "--label", "site=south"), filepath.Join(t.TempDir(), "gw-1")); r.code != 0 {
		t.Fatalf("%v", r) // enrolled, never started: it stays offline
	}
	startConnector(t, "pump-7", pumpDir, "--service", "echo="+echoService(t))
	b.waitDevice("pump-7", 30*time.Second, "online", isOnline)

	// The admin grants the engineer echo on pump-7.
	admin := newChrome(t)
	admin.logIn(b, idp, adminPerson, "/devices")
	admin.see("pump-7")
	admin.audit("devices")
	admin.open(b, "/grants")
	admin.audit("grants")
	admin.fill(map[string]string{"#g-subject": engineerPerson.Email, "#g-devices": "pump-7", "#g-services": "echo",
		"#g-duration": "1h", "#g-reason": xssReason, "#g-ticket": "OPS-7"})
	admin.submit(`#g-ticket`)
	admin.see(engineerPerson.Email + " may reach echo on pump-7 until")
	admin.see(xssReason) // shown as text, in the grants list
	admin.open(b, "/devices/pump-7")
	admin.see(xssReason)
	admin.audit("device")

	// The engineer's session, from the CLI with an automation token.
	tok := strings.TrimSpace(b.mustCLI("user", "token", "--email", engineerPerson.Email, "--role", "engineer", "--ttl", "1h"))
	proxy := exec.Command(bins.cli, "proxy", "pump-7", "echo")
	proxy.Env = env("FIELDPASS_BROKER="+b.URL(), "FIELDPASS_TOKEN="+tok, "HOME="+t.TempDir())
	stdin, err := proxy.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var proxyOut, proxyErr syncBuffer
	proxy.Stdout, proxy.Stderr = &proxyOut, &proxyErr
	proxy.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	proxyDone := make(chan struct{})
	go func() { proxy.Wait(); close(proxyDone) }()
	t.Cleanup(func() { proxy.Process.Kill(); <-proxyDone })
	stdin.Write([]byte("ping\n"))
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(proxyOut.String(), "ping"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the engineer's session carried nothing: stdout %q, stderr %q", proxyOut.String(), proxyErr.String())
		}
	}

	// A vendor: nothing to see, so they ask for gw-1.
	vendor := newChrome(t)
	vendor.logIn(b, idp, vendorPerson, "/devices")
	vendor.see("You hold no grant in force right now")
	vendor.dontSee("pump-7")
	vendor.open(b, "/access?device=gw-1")
	vendor.audit("access")
	vendor.fill(map[string]string{"#req-service": "web", "#req-duration": "2h", "#req-reason": "firmware update", "#req-ticket": "VEN-1"})
	vendor.submit(`#req-ticket`)
	vendor.see("Access to web on gw-1 for 2h requested")

	// The approver approves it; their own requests they could not.
	approver := newChrome(t)
	approver.logIn(b, idp, approverPerson, "/approvals")
	approver.see(vendorPerson.Email)
	approver.audit("approvals")
	approver.press("approve", `button[value=approve]`) // a live page
	approver.see("Approved: " + vendorPerson.Email + " may reach web on gw-1")

	vendor.open(b, "/devices")
	vendor.see("gw-1")
	vendor.dontSee("pump-7")

	// The auditor: the live session, the filtered list, its export, the chain.
	auditor := newChrome(t)
	auditor.logIn(b, idp, auditorPerson, "/live")
	auditor.see(engineerPerson.Email)
	auditor.audit("live")
	auditor.open(b, "/sessions?device=pump-7&open=1")
	auditor.see(engineerPerson.Email)
	auditor.audit("sessions")
	csv := eval(auditor, "export", chromedp.Evaluate[string](
		`fetch("/sessions/export/csv?device=pump-7&open=1", {credentials: "same-origin"}).then(r => r.text())`, chromedp.EvalAwaitPromise))
	if lines := strings.Split(strings.TrimSpace(csv), "\n"); len(lines) != 2 || !strings.Contains(lines[1], engineerPerson.Email) || !strings.HasPrefix(lines[0], "id,user,device") {
		t.Errorf("CSV export of the filtered set:\n%s", csv)
	}
	auditor.open(b, "/audit")
	auditor.see("events check out")
	auditor.audit("audit")
	auditor.open(b, "/grants")
	auditor.see("This needs the admin role")

	// The admin revokes the engineer's grant: the page says the live
	// session closed, and the CLI says why it ended.
	admin.open(b, "/grants")
	// The page asks first; the admin answers OK.
	eval(admin, "answer the confirmation", chromedp.Evaluate[bool](`window.confirm = q => q.includes("Live sessions it covers are closed"); true`))
	admin.run("revoke", chromedp.Click(chromedp.CSS(`button[aria-label="Revoke the grant to `+engineerPerson.Email+`"]`)))
	admin.see("It covered 1 live session: 1 closed.")
	select {
	case <-proxyDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the engineer's proxy outlived the revoked grant")
	}
	if !strings.Contains(proxyErr.String(), "grant_revoked") {
		t.Errorf("the CLI did not say why the session ended: %q", proxyErr.String())
	}

	for _, c := range []*chrome{admin, vendor, approver, auditor} {
		if title := c.title(); strings.Contains(title, "pwned") {
			t.Errorf("markup from a grant's reason ran as script (title %q)", title)
		}
	}
}

// logIn opens path on the broker, is sent to the provider's form, logs in
// as who and comes back to path.
func (c *chrome) logIn(b *broker, idp *devIDP, who idpUser, path string) {
	c.t.Helper()
	c.run("open "+path, chromedp.Navigate(b.URL()+path))
	c.logInAt(idp, who)
	c.run("back at "+path, chromedp.WaitVisible(chromedp.CSS(`main`)))
	if u := c.location(); !strings.HasPrefix(u, b.URL()+path) {
		c.t.Fatalf("after logging in as %s: at %s, want %s", who.Email, u, b.URL()+path)
	}
	c.see(who.Email) // the header says who is logged in
}

// open loads path and waits for its content.
func (c *chrome) open(b *broker, path string) {
	c.t.Helper()
	c.run("open "+path, chromedp.Navigate(b.URL()+path), chromedp.WaitVisible(chromedp.CSS(`main`)))
}

// see waits until the page shows text.
func (c *chrome) see(text string) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.text(), text) {
		if time.Now().After(deadline) {
			c.t.Fatalf("the page at %s does not show %q:\n%s", c.location(), text, tail(c.text(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *chrome) dontSee(text string) {
	c.t.Helper()
	if strings.Contains(c.text(), text) {
		c.t.Errorf("the page at %s shows %q, which this person may not see:\n%s", c.location(), text, tail(c.text(), 40))
	}
}

func (c *chrome) title() string {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Title())
	return s
}

// fill types into form fields, by CSS selector.
func (c *chrome) fill(fields map[string]string) {
	c.t.Helper()
	for sel, v := range fields {
		q, _ := json.Marshal(sel)
		eval(c, "clear "+sel, chromedp.Evaluate[bool](`(e => { e.value = ""; return true })(document.querySelector(`+string(q)+`))`))
		c.run("fill "+sel, chromedp.SendKeys(chromedp.CSS(sel), v))
	}
}

// submit submits the form holding the field sel, as pressing its button
// would.
func (c *chrome) submit(sel string) {
	c.t.Helper()
	c.run("submit", chromedp.Submit(chromedp.CSS(sel)))
	c.run("after submit", chromedp.WaitVisible(chromedp.CSS(`main`)))
}

// audit runs axe-core on the page and fails on serious or critical
// accessibility violations; then it saves screenshots at desktop and
// phone sizes.
func (c *chrome) audit(name string) {
	c.t.Helper()
	axe, err := os.ReadFile(filepath.Join(bins.moduleRoot, "e2e", "testdata", "axe.min.js"))
	if err != nil {
		c.t.Fatal(err)
	}
	eval(c, "load axe-core", chromedp.Evaluate[any](string(axe)))
	violations := eval(c, "axe "+name, chromedp.Evaluate[[]string](`axe.run(document, {resultTypes: ["violations"]}).then(r =>
		r.violations.filter(v => v.impact === "serious" || v.impact === "critical")
		 .map(v => v.impact + " " + v.id + ": " + v.help + " (" + v.nodes.map(n => n.target.join(" ")).join("; ") + ")"))`, chromedp.EvalAwaitPromise))
	for _, v := range violations {
		c.t.Errorf("page %s: %s", name, v)
	}
	// The page must not scroll sideways at phone width.
	c.screenshot(name + "-1280x800")
	c.run("phone size", chromedp.EmulateViewport(390, 844))
	if wide := eval(c, "overflow", chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`)); wide {
		c.t.Errorf("page %s scrolls sideways at 390 px", name)
	}
	c.screenshot(name + "-390x844")
	c.run("desktop size", chromedp.EmulateViewport(1280, 800))
}
