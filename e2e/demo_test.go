//go:build linux

package e2e_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDemo runs make demo's program (fieldpass-demo, with the binaries
// built for this run) on a fresh directory, as a newcomer would, and uses
// what it prints: logs in to the portal in Chromium as the engineer
// through the provider's form, opens a device's web UI, runs a command in
// the browser terminal (where OpenSSH is installed), and runs `fieldpass
// ssh` with a token. Ctrl-C (SIGINT) must stop everything it started,
// Postgres included. A second run on the same directory reuses the data.
// Both start times (to "ready") are logged.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Postgres cluster of its own")
	}
	t.Parallel()
	// Not t.TempDir: when the test runs as root, Postgres runs as another
	// user, who must be able to reach the directory.
	dir, err := os.MkdirTemp("", "fieldpass-demo-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}

	first := startDemo(t, dir, "first")
	if !strings.Contains(first.out(), "first run") {
		t.Errorf("a fresh directory is not announced as a first run:\n%s", first.out())
	}
	text := first.out()
	portal := mustMatch(t, text, `Portal: (http://localhost:\d+)`)
	issuer := mustMatch(t, text, `identity provider \(fieldpass-devidp\)\.\.\.\s+\S+\s+(http://127\.0\.0\.1:\d+)`)
	dbURL := mustMatch(t, text, `FIELDPASS_DATABASE_URL=(\S+)`)
	engineer := engineerPerson
	engineer.Password = mustMatch(t, text, `engineer\s+engineer@example\.com\s+password (\S+)`)
	if !strings.Contains(text, "fieldpass login --broker "+portal) || !strings.Contains(text, "fieldpass forward router-north web") {
		t.Errorf("the demo does not print the CLI commands to try:\n%s", text)
	}
	if !regexp.MustCompile(`vendor\s+ssh and web on router-south until`).MatchString(text) {
		t.Errorf("no expiring vendor grant printed:\n%s", text)
	}

	// The portal, as the engineer, through the provider's login form.
	c := newChrome(t)
	c.run("open the portal", chromedp.Navigate(portal+"/devices/router-north"))
	c.logInAt(&devIDP{issuer: issuer}, engineer)
	open := `button[aria-label="Open web on router-north in a new tab"]`
	c.run("device page", chromedp.WaitVisible(chromedp.CSS(open)))
	c.openHere("open the router's web UI", open)
	c.run("the router's sign-in page", chromedp.WaitVisible(chromedp.ID("signin")))
	if u := c.location(); !strings.HasPrefix(u, "http://router-north--web.localhost:") {
		t.Errorf("the router's web UI is at %s, want its own origin router-north--web.localhost", u)
	}
	c.run("sign in to the router",
		chromedp.SendKeys(chromedp.ID("user"), "admin"),
		chromedp.SendKeys(chromedp.ID("password"), "router"),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("live")))
	c.screenshot("router-status")

	sshLine := regexp.MustCompile(`SSH on the devices: user (\S+), key (\S+)`).FindStringSubmatch(text)
	if sshdPath() == "" {
		if !strings.Contains(text, "apt-get install openssh-server") {
			t.Errorf("without sshd, the demo does not say how to install it:\n%s", text)
		}
		t.Log("OpenSSH is not installed: terminal and fieldpass ssh not tried")
	} else if sshLine == nil {
		t.Errorf("sshd is installed but the demo offers no SSH:\n%s", text)
	} else {
		user, key := sshLine[1], sshLine[2]
		c.run("open the terminal", chromedp.Navigate(portal+"/terminal/router-north/ssh"), chromedp.WaitVisible(chromedp.CSS("main")))
		c.connectTerminal(user, key)
		c.waitPrompt()
		c.typeInTerminal("echo demo-$((6*7))\n")
		c.seeInTerminal("demo-42")

		// The CLI, with a token for the engineer.
		token := strings.TrimSpace(runCmd(t, env("FIELDPASS_DATABASE_URL="+dbURL), bins.broker,
			"user", "token", "--email", engineerPerson.Email, "--ttl", "1h").stdout)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a slow login shell (see waitPrompt)
		defer cancel()
		cmd := exec.CommandContext(ctx, bins.cli, "ssh", user+"@router-north", "--",
			"-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "echo", "cli-$((6*7))")
		cmd.Env = env("HOME="+t.TempDir(), "FIELDPASS_BROKER="+portal, "FIELDPASS_TOKEN="+token)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), "cli-42") {
			t.Errorf("fieldpass ssh: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
		}
	}

	first.interrupt(t)
	second := startDemo(t, dir, "second")
	if !strings.Contains(second.out(), "reusing its data") || !strings.Contains(second.out(), "cluster reused") {
		t.Errorf("the second run does not reuse the data:\n%s", second.out())
	}
	if p := mustMatch(t, second.out(), `Portal: (http://localhost:\d+)`); p != portal {
		t.Errorf("the second run's portal is %s, the first's %s", p, portal)
	}
	second.interrupt(t)
}

// demoRun is one run of fieldpass-demo.
type demoRun struct {
	dir     string
	outPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	err     error
}

func (d *demoRun) out() string { b, _ := os.ReadFile(d.outPath); return string(b) }

// startDemo starts fieldpass-demo on dir and waits until it is ready.
func startDemo(t *testing.T, dir, name string) *demoRun {
	t.Helper()
	d := &demoRun{dir: dir, outPath: filepath.Join(t.TempDir(), name+".out"), exited: make(chan struct{})}
	out, err := os.Create(d.outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	d.cmd = exec.Command(filepath.Join(filepath.Dir(bins.broker), "fieldpass-demo"), "--dir", dir)
	d.cmd.Env = env()
	d.cmd.Stdout, d.cmd.Stderr = out, out
	// Its own process group, as under a terminal; should this test binary
	// die, the demo gets SIGTERM and still tears down.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	start := time.Now()
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
			return
		default:
		}
		syscall.Kill(d.cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-d.exited:
		case <-time.After(60 * time.Second):
			syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
		}
		t.Logf("%s run's output:\n%s", name, d.out())
	})
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(d.out(), "Press Ctrl-C") {
		select {
		case <-d.exited:
			t.Fatalf("the demo exited before it was ready: %v\n%s", d.err, d.out())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo is not ready after 2 minutes:\n%s", d.out())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s run: ready after %s (the demo says %q)", name, time.Since(start).Round(10*time.Millisecond),
		regexp.MustCompile(`ready in \S+`).FindString(d.out()))
	return d
}

// interrupt sends SIGINT, as Ctrl-C would, and checks that the demo ends
// cleanly leaving no process it started (or they started) running.
func (d *demoRun) interrupt(t *testing.T) {
	t.Helper()
	started := descendants(d.cmd.Process.Pid)
	if len(started) < 6 { // postgres, devidp, broker, two connectors at least
		t.Errorf("the running demo has only %d descendant processes", len(started))
	}
	if err := syscall.Kill(d.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	select {
	case <-d.exited:
		if d.err != nil {
			t.Errorf("the demo after SIGINT: %v, want a clean exit\n%s", d.err, d.out())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the demo still runs 60 s after SIGINT\n%s", d.out())
	}
	t.Logf("stopped %d processes in %s", len(started), time.Since(stopped).Round(10*time.Millisecond))
	for pid, cmdline := range started {
		if alive(pid) {
			t.Errorf("process %d (%s) still runs after the demo stopped", pid, cmdline)
		}
	}
	if left := processesMentioning(d.dir); len(left) > 0 {
		t.Errorf("processes left running:\n%s", strings.Join(left, "\n"))
	}
	if _, err := os.Stat(filepath.Join(d.dir, "postgres", "data", "postmaster.pid")); err == nil {
		t.Errorf("Postgres did not shut down cleanly: its postmaster.pid is still there")
	}
}

// descendants maps the processes below pid to their command lines.
func descendants(pid int) map[int]string {
	parent := map[int]int{}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		child, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if len(f) > 1 {
			parent[child], _ = strconv.Atoi(f[1])
		}
	}
	found := map[int]string{}
	for child := range parent {
		for p := parent[child]; p > 1; p = parent[p] {
			if p == pid {
				b, _ := os.ReadFile("/proc/" + strconv.Itoa(child) + "/cmdline")
				found[child] = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
				break
			}
		}
	}
	return found
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func mustMatch(t *testing.T, text, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the demo's output does not match %s:\n%s", re, text)
	}
	return m[1]
}

// processesMentioning lists the command lines of running processes that
// contain s.
func processesMentioning(s string) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if line := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(line, s) {
			found = append(found, filepath.Base(filepath.Dir(p))+": "+line)
		}
	}
	return found
}
