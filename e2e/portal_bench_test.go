//go:build linux

package e2e_test

import (
	"context"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass/demo/routerui"
)

// TestPortalFigures measures the browser side on the path people take, in
// real Chromium against the real broker binary on loopback: page loads
// through the broker, a device web UI through the proxy next to the same
// UI loaded directly, and the size a busy terminal's recording grows by.
// Figures, not assertions: make bench-portal (FIELDPASS_BENCH=1).
func TestPortalFigures(t *testing.T) {
	if os.Getenv("FIELDPASS_BENCH") != "1" {
		t.Skip("figures for make bench-portal; set FIELDPASS_BENCH=1")
	}
	needOpenSSH(t)
	b, idp := startPortalBrokerOn(t, "localhost", engineerPerson, adminPerson)
	portalURL := "http://localhost:" + b.httpAddr[strings.LastIndex(b.httpAddr, ":")+1:]
	b.publicURL = portalURL

	ui := routerui.New("admin", "router-pw", false)
	router := httptest.NewServer(ui)
	t.Cleanup(router.Close)
	sshd := startSSHD(t)
	dir := b.enroll("router-1")
	startConnector(t, "router-1", dir, "--service", "web="+strings.TrimPrefix(router.URL, "http://"), "--service", "ssh="+sshd.addr)
	b.waitDevice("router-1", 30*time.Second, "online", isOnline)
	ops := b.tokenPerson("ops@example.com", "admin")
	for _, svc := range []string{"web", "ssh"} {
		if r := ops.run(t, "grant", "create", "--user", engineerPerson.Email, "--device", "router-1", "--service", svc, "--duration", "2h", "--reason", "figures"); r.code != 0 {
			t.Fatalf("grant create: %v", r)
		}
	}

	c := newChrome(t)
	c.run("log in", chromedp.Navigate(portalURL+"/devices"))
	c.logInAt(idp, engineerPerson)
	c.run("devices", chromedp.WaitVisible(chromedp.CSS("main")))

	// Page loads through the broker: navigation start to load end.
	loadTime := func(url string) time.Duration {
		c.run("open "+url, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("body")))
		ms := eval(c, "timing", chromedp.Evaluate[float64](`(e => e.loadEventEnd - e.startTime)(performance.getEntriesByType("navigation")[0])`))
		return time.Duration(ms * float64(time.Millisecond))
	}
	for _, page := range []string{"/devices", "/devices/router-1", "/access", "/sessions"} {
		var ds []time.Duration
		for range 15 {
			ds = append(ds, loadTime(portalURL+page))
		}
		t.Logf("portal page %-18s load p50 %s (min %s, max %s, 15 loads)", page, median(ds), minDur(ds), maxDur(ds))
	}

	// The router's status page, directly and through the proxy.
	c.run("open the router", chromedp.Navigate(portalURL+"/devices/router-1"))
	c.run("device page", chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Open web on router-1 in a new tab"]`)))
	c.openHere("open web", `button[aria-label="Open web on router-1 in a new tab"]`)
	c.run("the router's sign-in page", chromedp.WaitVisible(chromedp.ID("signin")))
	proxied := c.location()
	proxied = proxied[:strings.Index(proxied, "/login")]
	var through, direct []time.Duration
	for range 15 {
		through = append(through, loadTime(proxied+"/login"))
		direct = append(direct, loadTime(router.URL+"/login"))
	}
	t.Logf("device web UI page: through the broker p50 %s, directly p50 %s (15 loads each, same browser)", median(through), median(direct))

	// A busy terminal: 60 s of dense output, recorded.
	c.run("terminal", chromedp.Navigate(portalURL+"/terminal/router-1/ssh"))
	c.connectTerminal(sshd.user, sshd.keyFile)
	c.see("pinned now")
	c.waitPrompt()
	c.typeInTerminal("for i in $(seq 1 600); do date; ls -la /usr/bin | head -40; sleep 0.1; done\n")
	time.Sleep(60 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var size int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(length(events)), 0) FROM recording_chunks`).Scan(&size); err != nil {
		t.Fatal(err)
	}
	t.Logf("busy terminal recording: %d KiB after ~60 s of dense output (asciicast v2, chunks flushed every second)", size>>10)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(100 * time.Microsecond)
}

func minDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m.Round(100 * time.Microsecond)
}

func maxDur(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m.Round(100 * time.Microsecond)
}
