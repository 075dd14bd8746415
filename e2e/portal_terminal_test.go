//go:build linux

package e2e_test

import (
	"encoding/json"
	"io"
	"net"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestPortalTerminal: the browser terminal against a real OpenSSH server,
// through the broker and a real connector. The engineer logs in to the
// device with a private key uploaded in the page (never stored), runs a
// command and sees its output; the host key is pinned on first use; an
// auditor watches live; the admin revokes the grant and the terminal says
// why it closed; the recording replays in the portal and holds the output;
// a device whose host key changes is refused until an admin accepts it.
func TestPortalTerminal(t *testing.T) {
	needOpenSSH(t)
	t.Parallel()
	b, idp := startPortalBroker(t, engineerPerson, auditorPerson, adminPerson)
	first, second := startSSHD(t), startSSHD(t) // two host keys, one account key each
	relay := startSwitch(t, first.addr)
	dir := b.enroll("pump-7")
	startConnector(t, "pump-7", dir, "--service", "ssh="+relay.addr())
	b.waitDevice("pump-7", 30*time.Second, "online", isOnline)
	ops := b.tokenPerson("ops@example.com", "admin")
	if r := ops.run(t, "grant", "create", "--user", engineerPerson.Email, "--device", "pump-7", "--service", "ssh",
		"--duration", "1h", "--reason", "look at the logs"); r.code != 0 {
		t.Fatalf("grant create: %v", r)
	}

	eng := newChrome(t)
	eng.logIn(b, idp, engineerPerson, "/terminal/pump-7/ssh")
	eng.audit("terminal")
	eng.connectTerminal(first.user, first.keyFile)
	eng.see("pinned now")
	eng.waitPrompt()
	eng.typeInTerminal("echo fieldpass-$((6*7))\n")
	eng.seeInTerminal("fieldpass-42")
	// Keystroke echo through the whole path, as the person feels it.
	var echo []time.Duration
	for i := range 20 {
		mark := string(rune('a' + i))
		start := time.Now()
		eng.typeInTerminal(mark)
		for deadline := time.Now().Add(5 * time.Second); !strings.HasSuffix(strings.TrimRight(eng.lastTerminalLine(), " "), mark); {
			if time.Now().After(deadline) {
				t.Fatalf("keystroke %q never echoed: %q", mark, eng.lastTerminalLine())
			}
			time.Sleep(2 * time.Millisecond)
		}
		echo = append(echo, time.Since(start))
	}
	eng.typeInTerminal("\n") // the marks run as a command nobody has: a new prompt
	eng.waitPrompt()
	sort.Slice(echo, func(i, j int) bool { return echo[i] < echo[j] })
	t.Logf("keystroke echo through portal, broker, WireGuard, connector and sshd (read by polling the page every 2 ms): p50 %s, p90 %s, max %s",
		echo[len(echo)/2].Round(time.Millisecond), echo[len(echo)*9/10].Round(time.Millisecond), echo[len(echo)-1].Round(time.Millisecond))

	// The auditor watches the live terminal, read-only.
	aud := newChrome(t)
	aud.logIn(b, idp, auditorPerson, "/live")
	aud.run("the session", chromedp.WaitVisible(chromedp.CSS(`td[data-label=Person]`)))
	aud.open(b, "/sessions?device=pump-7&open=1")
	aud.run("open it", chromedp.Click(chromedp.CSS(`td[data-label=Started] a`)), chromedp.WaitVisible(chromedp.CSS("main h1")))
	aud.run("watch", chromedp.Click(chromedp.CSS(`a[href$="/watch"]`)), chromedp.WaitVisible(chromedp.CSS(".xterm-rows")))
	aud.seeInTerminal("fieldpass-42") // what was on the screen before they joined
	eng.typeInTerminal("echo watched-$((2+2))\n")
	aud.seeInTerminal("watched-4")
	aud.audit("watch")

	// The admin revokes the grant: the engineer's terminal says why.
	if r := ops.run(t, "grant", "list", "--json"); r.code != 0 {
		t.Fatalf("grant list: %v", r)
	} else {
		id := jsonField(t, r.stdout, "id")
		if r := ops.run(t, "grant", "revoke", id); r.code != 0 {
			t.Fatalf("grant revoke: %v", r)
		}
	}
	eng.see("Your access to this device was revoked.")

	// The recording: replayed in the portal, and it holds the output.
	aud.open(b, "/sessions?device=pump-7")
	aud.run("the ended session", chromedp.Click(chromedp.CSS(`td[data-label=Started] a`)), chromedp.WaitVisible(chromedp.CSS("#replay .ap-player")))
	aud.audit("replay")
	cast := eval(aud, "recording", chromedp.Evaluate[string](`fetch(document.getElementById("replay").dataset.cast, {credentials: "same-origin"}).then(r => r.text())`, chromedp.EvalAwaitPromise))
	if !strings.HasPrefix(cast, `{"env":{"TERM":"xterm-256color"},"height":`) || !strings.Contains(cast, "fieldpass-42") || !strings.Contains(cast, "watched-4") {
		t.Errorf("the recording:\n%s", tail(cast, 10))
	}
	if strings.Contains(cast, `,"i",`) {
		t.Errorf("keystrokes were recorded on a device whose labels do not ask for it")
	}
	t.Logf("recording: %d bytes", len(cast))

	// The device now shows another host key: refused, until an admin
	// accepts it on the device's page.
	if r := ops.run(t, "grant", "create", "--user", engineerPerson.Email, "--device", "pump-7", "--service", "ssh",
		"--duration", "1h", "--reason", "again"); r.code != 0 {
		t.Fatalf("grant create: %v", r)
	}
	relay.to(second.addr)
	eng.open(b, "/terminal/pump-7/ssh")
	eng.connectTerminal(second.user, second.keyFile)
	eng.see("has changed")
	adm := newChrome(t)
	adm.logIn(b, idp, adminPerson, "/devices/pump-7")
	eval(adm, "answer the confirmation", chromedp.Evaluate[bool](`window.confirm = () => true; true`))
	adm.run("accept", chromedp.Click(chromedp.CSS(`button[aria-label="Accept a new host key for ssh"]`)))
	adm.see("pins the host key it is offered")
	eng.open(b, "/terminal/pump-7/ssh")
	eng.connectTerminal(second.user, second.keyFile)
	eng.see("pinned now")
	eng.waitPrompt()
	eng.typeInTerminal("echo second-host\n")
	eng.seeInTerminal("second-host")
}

// connectTerminal logs in to the device in the terminal page with a key.
func (c *chrome) connectTerminal(user, keyFile string) {
	c.t.Helper()
	c.run("log in to the device",
		chromedp.WaitVisible(chromedp.ID("term-user")),
		chromedp.SendKeys(chromedp.ID("term-user"), user),
		chromedp.SetUploadFiles(chromedp.ID("term-key"), []string{keyFile}),
		// Enabled once the page's script has taken the form.
		chromedp.WaitEnabled(chromedp.ID("term-connect")),
		chromedp.Click(chromedp.ID("term-connect")))
}

func (c *chrome) terminalText() string {
	return eval(c, "terminal", chromedp.Evaluate[string](`(e => e ? e.innerText : "")(document.querySelector(".xterm-rows"))`))
}

func (c *chrome) lastTerminalLine() string {
	lines := strings.Split(strings.TrimRight(c.terminalText(), "\n "), "\n")
	return lines[len(lines)-1]
}

func (c *chrome) seeInTerminal(text string) {
	c.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(c.terminalText(), strings.TrimSuffix(text, "\n")); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			c.t.Fatalf("the terminal does not show %q:\n%s\npage: %s", text, c.terminalText(), tail(c.text(), 10))
		}
	}
}

// waitPrompt waits for the shell's prompt ($ or #) at the end of the
// screen: what is typed before the shell reads its terminal may be lost.
// The test account's profile may be slow (this machine's root runs pyenv's
// init at every login: seconds on a loaded machine).
func (c *chrome) waitPrompt() {
	c.t.Helper()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if l := strings.TrimRight(c.lastTerminalLine(), " \u00a0"); strings.HasSuffix(l, "$") || strings.HasSuffix(l, "#") {
			return
		}
		if time.Now().After(deadline) {
			c.screenshot("no-prompt")
			c.t.Fatalf("no shell prompt: %q\npage: %s", c.terminalText(), tail(c.text(), 15))
		}
	}
}

// typeInTerminal types into the focused terminal.
func (c *chrome) typeInTerminal(s string) {
	c.t.Helper()
	c.run("type", chromedp.SendKeys(chromedp.CSS(".xterm-helper-textarea"), s))
}

// switchRelay forwards TCP connections to a target that the test can
// change: a device whose SSH server is replaced behind the same address.
type switchRelay struct {
	ln     net.Listener
	target atomic.Value
}

func startSwitch(t *testing.T, target string) *switchRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &switchRelay{ln: ln}
	s.target.Store(target)
	go serveConns(ln, func(c net.Conn) {
		defer c.Close()
		up, err := net.Dial("tcp", s.target.Load().(string))
		if err != nil {
			return
		}
		defer up.Close()
		go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
		io.Copy(c, up)
	})
	return s
}

func (s *switchRelay) addr() string     { return s.ln.Addr().String() }
func (s *switchRelay) to(target string) { s.target.Store(target) }

// jsonField is key of the first object of a JSON array.
func jsonField(t *testing.T, s, key string) string {
	t.Helper()
	var list []map[string]any
	if err := json.Unmarshal([]byte(s), &list); err != nil || len(list) == 0 {
		t.Fatalf("want a JSON list, got %q (%v)", s, err)
	}
	v, _ := list[0][key].(string)
	return v
}
