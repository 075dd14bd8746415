//go:build linux

package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/demo/routerui"
)

// TestForwardAcrossConnectorRestart: `fieldpass forward` keeps its one
// session while the device's connector is killed and restarted with the
// same state (a new tunnel: a connector restart, a NAT rebinding that
// forces a new handshake). The connection in flight ends; forward keeps
// listening, and a new connection reaches the device on the same session;
// the record counts the reconnect and the connection it cut.
func TestForwardAcrossConnectorRestart(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	svc := echoService(t)
	dir := b.enroll("pump-7")
	conn := startConnector(t, "pump-7", dir, "--service", "echo="+svc)
	b.waitDevice("pump-7", 30*time.Second, "online", isOnline)
	ops := b.tokenPerson("ops@example.com", fieldpass.RoleAdmin)
	eng := b.tokenPerson("eng@example.com", fieldpass.RoleEngineer)
	if r := ops.run(t, "grant", "create", "--user", "eng@example.com", "--device", "pump-7", "--service", "echo",
		"--duration", "1h", "--reason", "reconnect test"); r.code != 0 {
		t.Fatalf("grant create: %v", r)
	}
	fw := startCmd(t, eng.env, bins.cli, "forward", "pump-7", "echo")
	local := fw.waitOutput(t, 30*time.Second, regexp.MustCompile(`^forwarding (\S+) to pump-7/echo\n`))[1]

	held := dialForward(t, local)
	defer held.Close()
	mustEcho(t, held, "before")
	session := eng.waitSession(t, "the forward's session open", func(s fieldpass.Session) bool { return s.Open() })

	if err := conn.signal(syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	second := startConnector(t, "pump-7", dir, "--service", "echo="+svc)

	// The connection in flight ends with the old tunnel.
	held.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := bufio.NewReader(held).ReadString('\n'); err == nil {
		t.Fatal("the connection in flight read a line after its device's tunnel was replaced")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection in flight still open 30s after the connector restarted")
	}
	t.Logf("connection in flight cut %s after the connector was restarted", time.Since(restarted).Round(time.Millisecond))

	// forward is still there, and a new connection reaches the device on
	// the same session.
	c := dialForward(t, local)
	defer c.Close()
	mustEcho(t, c, "after")
	t.Logf("new connection through the same forward answered %s after the restart", time.Since(restarted).Round(time.Millisecond))
	select {
	case <-fw.done:
		t.Fatalf("forward exited (status %d) across the reconnect: %q", fw.code, fw.stderr)
	default:
	}

	ss := eng.sessions(t)
	if len(ss) != 1 || ss[0].ID != session.ID || !ss[0].Open() {
		t.Fatalf("sessions %+v: want the one forward session %s, open", ss, session.ID)
	}
	s := eng.waitSession(t, "the reconnect on the record", func(s fieldpass.Session) bool {
		return s.ID == session.ID && s.DeviceReconnects == 1 && s.StreamsCut == 1
	})
	if !s.Open() {
		t.Fatalf("session %+v ended", s)
	}
	out := eng.mustRun(t, "sessions")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[0], "RECONNECTS") {
		t.Errorf("fieldpass sessions:\n%s", out)
	} else if f := strings.Fields(lines[1]); len(f) < 3 || f[len(f)-3] != "1" || f[len(f)-2] != "1" {
		t.Errorf("fieldpass sessions shows %q, want 1 reconnect and 1 stream cut", lines[1])
	}
	audit := ops.mustRun(t, "audit", "--action", fieldpass.AuditSessionDeviceReconnected)
	if !strings.Contains(audit, "session:"+session.ID) || !strings.Contains(audit, `"streams_cut":1`) {
		t.Errorf("audit of the reconnect:\n%s", audit)
	}

	c.Close()

	// The device away for longer (a clean stop, restarted later): a
	// connection made meanwhile waits for it, up to the stream-open
	// deadline, and forward says why it hangs up; once the device is back,
	// connections go through again, still on the same session.
	// The connection just closed done on the device first: a clean stop
	// with a stream still closing can lose the connector's goodbye, and
	// the broker would then learn of the stop only from silence.
	second.waitLog(t, 10*time.Second, regexp.MustCompile(`msg="stream closed"`))
	if err := second.signal(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	b.waitDevice("pump-7", 30*time.Second, "offline", isOffline)
	away := dialForward(t, local)
	asked := time.Now()
	away.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintln(away, "while away")
	if line, err := bufio.NewReader(away).ReadString('\n'); err == nil {
		t.Fatalf("a connection while the device is away echoed %q", line)
	}
	waited := time.Since(asked)
	away.Close()
	// forward says it before it hangs up; its stderr reaches us through a pipe.
	for deadline := time.Now().Add(3 * time.Second); !strings.Contains(fw.stderr.String(), "device pump-7 is offline, reconnecting"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("forward's stderr %q: want it to say the device is reconnecting", fw.stderr)
		}
	}
	t.Logf("a connection while the device was away waited %s, then: %s", waited.Round(time.Millisecond), strings.TrimSpace(fw.stderr.String()))
	startConnector(t, "pump-7", dir, "--service", "echo="+svc)
	b.waitDevice("pump-7", 30*time.Second, "online", isOnline)
	c = dialForward(t, local)
	defer c.Close()
	mustEcho(t, c, "back again")
	c.Close()
	if ss := eng.sessions(t); len(ss) != 1 || ss[0].ID != session.ID || !ss[0].Open() {
		t.Fatalf("sessions %+v: want the one forward session %s, open", ss, session.ID)
	}

	if err := fw.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	fw.wait(t, 10*time.Second)
	s = eng.waitSession(t, "the forward's session ended", func(s fieldpass.Session) bool { return s.ID == session.ID && !s.Open() })
	// At least: a connection closed just before the clean stop may still
	// have been finishing, and the broker may call the device back once more.
	if s.EndReason != fieldpass.EndClientClosed || s.DeviceReconnects < 2 || s.StreamsCut < 1 {
		t.Errorf("ended session %+v: want client_closed, 2 reconnects or more, 1 stream cut or more", s)
	}
	t.Logf("the forward's session: %d reconnects, %d streams cut", s.DeviceReconnects, s.StreamsCut)
}

func dialForward(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// mustEcho sends a line through c to the echo service and reads it back.
func mustEcho(t *testing.T, c *net.TCPConn, line string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintln(c, line); err != nil {
		t.Fatalf("write %q: %v", line, err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("echo of %q: %q, %v", line, got, err)
	}
}

// TestPortalWebAcrossConnectorRestart: a device's web UI open in the
// portal keeps its session while the connector is killed and restarted:
// the router's live WebSocket is cut with the old tunnel, and the page,
// loaded again, comes through the new one on the same session, the person
// still signed in to the router.
func TestPortalWebAcrossConnectorRestart(t *testing.T) {
	t.Parallel()
	b, idp := startPortalBrokerOn(t, "localhost", engineerPerson)
	portalURL := "http://localhost:" + b.httpAddr[strings.LastIndex(b.httpAddr, ":")+1:]
	b.publicURL = portalURL
	ui := routerui.New("admin", "router-pw", true)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go ui.Tick(ctx, 100*time.Millisecond)
	router := httptest.NewServer(ui)
	t.Cleanup(router.Close)
	dir := b.enroll("router-1")
	target := "web=" + strings.TrimPrefix(router.URL, "http://")
	conn := startConnector(t, "router-1", dir, "--service", target)
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
	c.openHere("open the router", `button[aria-label="Open web on router-1 in a new tab"]`)
	c.run("the router's sign-in page", chromedp.WaitVisible(chromedp.ID("signin")))
	c.run("sign in to the router",
		chromedp.SendKeys(chromedp.ID("user"), "admin"),
		chromedp.SendKeys(chromedp.ID("password"), "router-pw"),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("live")))
	web := func() []fieldpass.Session {
		var out []fieldpass.Session
		for _, s := range admin.sessions(t) {
			if s.Device == "router-1" {
				out = append(out, s)
			}
		}
		return out
	}
	before := web()
	if len(before) != 1 || !before[0].Open() {
		t.Fatalf("web sessions before the restart: %+v, want one open", before)
	}

	if err := conn.signal(syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	startConnector(t, "router-1", dir, "--service", target)
	admin.waitSession(t, "the reconnect on the web session's record", func(s fieldpass.Session) bool {
		return s.ID == before[0].ID && s.Open() && s.DeviceReconnects == 1 && s.StreamsCut >= 1
	})
	c.run("the router's page again", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("live")))
	t.Logf("router's page loaded again through the same session %s after the restart", time.Since(restarted).Round(time.Millisecond))
	if u := c.location(); !strings.HasPrefix(u, "http://router-1--web.localhost:") {
		t.Errorf("after the restart the page is at %s, want the router's origin", u)
	}
	after := web()
	if len(after) != 1 || after[0].ID != before[0].ID || !after[0].Open() {
		t.Fatalf("web sessions after the restart: %+v, want the same one, open", after)
	}
	t.Logf("web session across the restart: %d reconnect, %d connections cut", after[0].DeviceReconnects, after[0].StreamsCut)
}

// TestPortalTerminalAcrossConnectorRestart: a browser terminal is one SSH
// connection, which a device reconnect cuts: the page says the connection
// dropped and to open the terminal again, and the record ends the session
// device_closed with the cut counted, not as the person's close.
func TestPortalTerminalAcrossConnectorRestart(t *testing.T) {
	needOpenSSH(t)
	t.Parallel()
	b, idp := startPortalBroker(t, engineerPerson)
	sshd := startSSHD(t)
	dir := b.enroll("pump-7")
	conn := startConnector(t, "pump-7", dir, "--service", "ssh="+sshd.addr)
	b.waitDevice("pump-7", 30*time.Second, "online", isOnline)
	ops := b.tokenPerson("ops@example.com", "admin")
	if r := ops.run(t, "grant", "create", "--user", engineerPerson.Email, "--device", "pump-7", "--service", "ssh",
		"--duration", "1h", "--reason", "look at the logs"); r.code != 0 {
		t.Fatalf("grant create: %v", r)
	}
	eng := newChrome(t)
	eng.logIn(b, idp, engineerPerson, "/terminal/pump-7/ssh")
	eng.connectTerminal(sshd.user, sshd.keyFile)
	eng.waitPrompt()
	eng.typeInTerminal("echo before-$((6*7))\n")
	eng.seeInTerminal("before-42")

	if err := conn.signal(syscall.SIGKILL, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	startConnector(t, "pump-7", dir, "--service", "ssh="+sshd.addr)
	eng.see("The connection to the device dropped (it is reconnecting)")
	s := ops.waitSession(t, "the terminal's session ended", func(s fieldpass.Session) bool { return s.Device == "pump-7" && !s.Open() })
	if s.EndReason != fieldpass.EndDeviceClosed || s.StreamsCut != 1 {
		t.Errorf("terminal session %+v: want device_closed, 1 stream cut", s)
	}
	// A new terminal reaches the device through its new tunnel.
	eng.open(b, "/terminal/pump-7/ssh")
	eng.connectTerminal(sshd.user, sshd.keyFile)
	eng.waitPrompt()
	eng.typeInTerminal("echo after-$((6*7))\n")
	eng.seeInTerminal("after-42")
}
