//go:build linux

package e2e_test

import (
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fieldpass/fieldpass/demo/routerui"
)

// TestPortalDeviceWebUI: an engineer opens a router's web UI from the
// portal, in a real browser, through the broker and a real connector. The
// router behaves as routers do (redirects and links to its LAN address, a
// cookie pinned to it, a CSP naming it, a WebSocket-fed live value) and as
// a compromised one might (cookies for the portal's host and every
// *.localhost): the person logs in to it, follows its absolute link, sees
// the live value move, and the portal's host never receives its cookies.
// Every request is on the session's record.
func TestPortalDeviceWebUI(t *testing.T) {
	t.Parallel()
	// The portal on http://localhost:PORT, device origins on
	// DEVICE--SERVICE.localhost:PORT: subdomains of the portal's host, the
	// layout a real deployment has (broker.example.com and
	// *.devices.broker.example.com), so a cookie for the parent would reach
	// the portal if the broker let it through.
	b, idp := startPortalBrokerOn(t, "localhost", engineerPerson)
	portalURL := "http://localhost:" + b.httpAddr[strings.LastIndex(b.httpAddr, ":")+1:]
	b.publicURL = portalURL // where the browser goes

	ui := routerui.New("admin", "router-pw", true)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go ui.Tick(ctx, 100*time.Millisecond)
	router := httptest.NewServer(ui)
	t.Cleanup(router.Close)
	dir := b.enroll("router-1")
	startConnector(t, "router-1", dir, "--service", "web="+strings.TrimPrefix(router.URL, "http://"))
	b.waitDevice("router-1", 30*time.Second, "online", isOnline)
	admin := b.tokenPerson("ops@example.com", "admin")
	if r := admin.run(t, "grant", "create", "--user", engineerPerson.Email, "--device", "router-1", "--service", "web",
		"--duration", "1h", "--reason", "check the router"); r.code != 0 {
		t.Fatalf("grant create: %v", r)
	}

	c := newChrome(t)
	c.run("open the portal", chromedp.Navigate(portalURL+"/devices/router-1"))
	c.logInAt(idp, engineerPerson)
	c.run("device page", chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Open web on router-1 in a new tab"]`)))
	c.audit("device-web")
	// The button opens a new tab; here the same tab will do.
	start := time.Now()
	c.openHere("open the router", `button[aria-label="Open web on router-1 in a new tab"]`)
	c.run("the router's sign-in page", chromedp.WaitVisible(chromedp.ID("signin")))
	if u := c.location(); !strings.HasPrefix(u, "http://router-1--web.localhost:") || !strings.HasSuffix(u, "/login") {
		t.Fatalf("the router's sign-in page is at %s, want its own origin router-1--web.localhost with the LAN redirect kept on it", u)
	}
	t.Logf("portal to the router's sign-in page through the broker: %s", time.Since(start).Round(time.Millisecond))
	c.screenshot("router-login")
	c.run("sign in to the router",
		chromedp.SendKeys(chromedp.ID("user"), "admin"),
		chromedp.SendKeys(chromedp.ID("password"), "router-pw"),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("live")))
	first := eval(c, "live value", chromedp.Evaluate[string](`document.getElementById("live").textContent`))
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := eval(c, "live value", chromedp.Evaluate[string](`document.getElementById("live").textContent`))
		if a, b := atoi(first), atoi(now); b > a {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live value stayed at %q: the router's WebSocket did not come through", now)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.run("follow the router's absolute link", chromedp.Click(chromedp.ID("refresh")), chromedp.WaitVisible(chromedp.ID("live")))
	if u := c.location(); !strings.HasPrefix(u, "http://router-1--web.localhost:") {
		t.Errorf("the router's link to http://192.168.1.1/status led to %s", u)
	}
	c.screenshot("router-status")

	// The router tried to set cookies for the portal's host: none arrived.
	c.run("back to the portal", chromedp.Navigate(portalURL+"/devices"), chromedp.WaitVisible(chromedp.CSS("main")))
	if cookies := eval(c, "portal cookies", chromedp.Evaluate[string](`document.cookie`)); strings.Contains(cookies, "stolen") || strings.Contains(cookies, "spill") {
		t.Errorf("the router set cookies on the portal's host: %q", cookies)
	}
	c.see(engineerPerson.Email) // and the portal session still stands

	// The record: the session, every request with its status, on the
	// session's page (written within a second or two of each request).
	c.open(b, "/sessions?device=router-1")
	c.run("the session", chromedp.Click(chromedp.CSS(`td[data-label=Started] a`)), chromedp.WaitVisible(chromedp.CSS("main h1")))
	wants := []string{"GET /\t302", "GET /login\t200", "POST /login\t302", "GET /status\t200", "GET /live\t101 (WebSocket)"}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		c.run("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("main h1")))
		log := eval(c, "request log", chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#web-requests tbody tr")).map(r => r.cells[1].textContent + "\t" + r.cells[2].textContent).join("\n")`))
		missing := ""
		for _, w := range wants {
			if !strings.Contains(log, w) {
				missing = w
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session's request log lacks %q:\n%s", missing, log)
		}
	}
	c.audit("session-web")
}

func atoi(s string) int {
	n, _ := strconv.Atoi(strings.TrimSpace(s))
	return n
}

// TestPortalDeviceWebUIHTTPS: a device web UI that speaks HTTPS with a
// self-signed certificate opens through the broker only where the operator
// accepted it, service by service (serve --web-https DEVICE/SERVICE);
// elsewhere the broker speaks plain HTTP inside the tunnel and takes no
// certificate at all, so the device's own refusal is what the person sees.
func TestPortalDeviceWebUIHTTPS(t *testing.T) {
	t.Parallel()
	b, idp := startPortalBrokerOn(t, "localhost", engineerPerson)
	// The operator accepts router-tls's certificate, and only that one.
	portalURL := "http://localhost:" + b.httpAddr[strings.LastIndex(b.httpAddr, ":")+1:]
	b.publicURL = portalURL
	b.p.signal(syscall.SIGTERM, 10*time.Second)
	b.args = append(b.args, "--web-https", "router-tls/web")
	b.restart()

	tlsRouter := httptest.NewTLSServer(routerui.New("admin", "router-pw", false))
	t.Cleanup(tlsRouter.Close)
	ops := b.tokenPerson("ops@example.com", "admin")
	for _, name := range []string{"router-tls", "router-plain"} {
		dir := b.enroll(name)
		startConnector(t, name, dir, "--service", "web="+strings.TrimPrefix(tlsRouter.URL, "https://"))
		b.waitDevice(name, 30*time.Second, "online", isOnline)
		if r := ops.run(t, "grant", "create", "--user", engineerPerson.Email, "--device", name, "--service", "web",
			"--duration", "1h", "--reason", "https"); r.code != 0 {
			t.Fatalf("grant create: %v", r)
		}
	}
	c := newChrome(t)
	c.run("open the portal", chromedp.Navigate(portalURL+"/devices/router-tls"))
	c.logInAt(idp, engineerPerson)
	open := func(device string) {
		c.run("device page", chromedp.Navigate(portalURL+"/devices/"+device), chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Open web on `+device+` in a new tab"]`)))
		c.openHere("open", `button[aria-label="Open web on `+device+` in a new tab"]`)
		for deadline := time.Now().Add(15 * time.Second); !strings.Contains(c.location(), device+"--web."); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("opening %s stayed at %s", device, c.location())
			}
		}
	}
	open("router-tls")
	c.see("FieldRouter 3000: Sign in")
	open("router-plain")
	c.see("Client sent an HTTP request to an HTTPS server")
}
