//go:build linux

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// proc is one long-running process of a test (a broker or a connector), its
// stdout and stderr going to a log file. It is killed when the test ends,
// and its log printed if the test failed (or always, with FIELDPASS_E2E_LOGS
// set in the environment of go test).
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has exited and been reaped
	err     error         // what Wait returned; read only after done
}

func startProc(t testing.TB, name, logPath string, env []string, bin string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	// Should the test binary itself die (a timeout panic, a kill), the
	// kernel kills this child too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if strings.Contains(p.log(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race (binaries built with -race)", p.name)
		}
		if t.Failed() || os.Getenv("FIELDPASS_E2E_LOGS") != "" {
			t.Logf("---- %s (pid %d) log %s, last 150 lines ----\n%s", p.name, p.pid(), p.logPath, tail(p.log(), 150))
		}
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig and waits up to timeout for the process to end.
func (p *proc) signal(sig syscall.Signal, timeout time.Duration) error {
	if p.exited() {
		return fmt.Errorf("%s had already exited: %v", p.name, p.err)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s still running %s after %v", p.name, timeout, sig)
	}
}

// kill ends the process for good (SIGKILL) and reaps it.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	return string(b)
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = append([]string{fmt.Sprintf("... (%d lines before)", len(l)-lines)}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}

// result is what a finished CLI command left.
type result struct {
	cmd            string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("%s: exit %d\nstdout: %q\nstderr: %q", r.cmd, r.code, r.stdout, r.stderr)
}

// runCmd runs bin to completion (at most a minute) and returns its output and
// exit code. Only failing to start it at all is fatal.
func runCmd(t testing.TB, env []string, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	r := result{cmd: filepath.Base(bin) + " " + strings.Join(args, " "), stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s: %v", r.cmd, err)
	}
	return r
}

// env returns this process's environment without any FIELDPASS_ or systemd
// variable that could steer a binary, plus extra.
func env(extra ...string) []string {
	var e []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FIELDPASS_") || strings.HasPrefix(kv, "STATE_DIRECTORY=") || strings.HasPrefix(kv, "GORACE=") {
			continue
		}
		e = append(e, kv)
	}
	// Binaries built with -race sleep a second at exit by default
	// (atexit_sleep_ms): a test timing how fast a process ends would
	// measure that, not the product.
	e = append(e, "GORACE=atexit_sleep_ms=0")
	return append(e, extra...)
}

// broker is a fieldpass-broker serve process with its own database, key
// file and loopback ports. restart starts a new process on the same ports,
// key and database, as systemd would.
type broker struct {
	t        *testing.T
	dir      string
	dbURL    string
	id       string
	httpAddr string // 127.0.0.1:port of the API
	wgAddr   string // 127.0.0.1:port of WireGuard (UDP)
	keyFile  string
	args     []string // serve flags beyond the harness's own (startBrokerWith)
	runs     int
	p        *proc // the current process

	// In a field network (startFieldBroker) the broker runs in a namespace
	// of its own, serves HTTPS on a public address, and reaches Postgres
	// through a link the test can cut; zero values mean loopback.
	ns         netns
	publicURL  string
	serveDBURL string       // the database URL serve uses, if not dbURL
	client     *http.Client // reaches the public URL
}

const brokerID = "e2e-broker"

// startBroker starts a broker on free loopback ports and waits until it
// answers /healthz.
func startBroker(t *testing.T) *broker {
	t.Helper()
	return startBrokerWith(t)
}

// startBrokerWith is startBroker with more serve flags, such as an
// identity provider's; restarts keep them.
func startBrokerWith(t *testing.T, args ...string) *broker {
	t.Helper()
	return startBrokerAt(t, "", args...)
}

// startBrokerAt is startBrokerWith on a chosen HTTP address (free ports if
// ""), for a test that must tell another party the broker's URL first, such
// as an identity provider its redirect URI.
func startBrokerAt(t *testing.T, httpAddr string, args ...string) *broker {
	t.Helper()
	b := &broker{t: t, dir: t.TempDir(), dbURL: pgtest.NewDatabase(t), id: brokerID, args: args}
	b.keyFile = filepath.Join(b.dir, "broker.key")
	for attempt := 1; ; attempt++ {
		b.httpAddr, b.wgAddr = httpAddr, freeAddr(t, "udp")
		if httpAddr == "" {
			b.httpAddr = freeAddr(t, "tcp")
		}
		err := b.start()
		if err == nil {
			return b
		}
		// The free ports were only free a moment ago; another test may have
		// taken one since.
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("retrying on other ports: %v", err)
	}
}

// restart starts the broker again on the same ports and key file; the
// previous process must have exited.
func (b *broker) restart() time.Time {
	b.t.Helper()
	if b.p != nil && !b.p.exited() {
		b.t.Fatalf("restart: %s is still running", b.p.name)
	}
	started := time.Now()
	if err := b.start(); err != nil {
		b.t.Fatal(err)
	}
	return started
}

func (b *broker) start() error {
	b.runs++
	logPath := filepath.Join(b.dir, fmt.Sprintf("broker-%d.log", b.runs))
	args := append([]string{"serve",
		"--http-listen", b.httpAddr,
		"--wg-listen", b.wgAddr,
		"--public-url", b.URL(),
		"--key-file", b.keyFile, "--init", // the first run creates it, later runs reuse it
		"--broker-id", b.id,
		"--log-level", "debug"}, // shown only when the test fails
		b.args...)
	name := fmt.Sprintf("broker (run %d)", b.runs)
	if b.ns != "" {
		serveEnv := env("FIELDPASS_DATABASE_URL=" + b.serveDBURL)
		b.p = startProc(b.t, name, logPath, serveEnv, "ip", b.ns.argv(bins.broker, args...)...)
	} else {
		b.p = startProc(b.t, name, logPath, b.env(), bins.broker, args...)
	}
	return b.waitHealthy(20 * time.Second)
}

func (b *broker) waitHealthy(timeout time.Duration) error {
	client := b.client
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
		defer client.CloseIdleConnections()
	}
	deadline := time.Now().Add(timeout)
	for {
		if b.p.exited() {
			return fmt.Errorf("%s exited before answering /healthz: %v\n%s", b.p.name, b.p.err, tail(b.p.log(), 30))
		}
		resp, err := client.Get(b.URL() + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok" {
				return nil
			}
			err = fmt.Errorf("status %s, body %q", resp.Status, body)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: /healthz not ok after %s: %v\n%s", b.p.name, timeout, err, tail(b.p.log(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URL is the broker's public URL, which connectors enrol at.
func (b *broker) URL() string {
	if b.publicURL != "" {
		return b.publicURL
	}
	return "http://" + b.httpAddr
}

func (b *broker) env() []string { return env("FIELDPASS_DATABASE_URL=" + b.dbURL) }

// cli runs a fieldpass-broker admin command against this broker's database.
func (b *broker) cli(args ...string) result {
	b.t.Helper()
	return runCmd(b.t, b.env(), bins.broker, args...)
}

// mustCLI runs an admin command that must succeed and returns its stdout.
func (b *broker) mustCLI(args ...string) string {
	b.t.Helper()
	r := b.cli(args...)
	if r.code != 0 {
		b.t.Fatalf("%v", r)
	}
	return r.stdout
}

// token creates an enrolment token for device and checks that it is printed
// as exactly one line.
func (b *broker) token(device string, args ...string) string {
	b.t.Helper()
	out := b.mustCLI(append([]string{"token", "create", "--device", device}, args...)...)
	tok := strings.TrimSuffix(out, "\n")
	if strings.Contains(tok, "\n") || fieldpass.CheckEnrollmentToken(tok) != nil {
		b.t.Fatalf("token create printed %q: want one line holding a token", out)
	}
	return tok
}

// enroll creates a token for name and enrols a connector into a new state
// directory, which it returns.
func (b *broker) enroll(name string) string {
	b.t.Helper()
	stateDir := filepath.Join(b.t.TempDir(), "state-"+name)
	r := enrollCmd(b.t, b.URL(), b.token(name), stateDir)
	if r.code != 0 {
		b.t.Fatalf("%v", r)
	}
	return stateDir
}

func enrollCmd(t testing.TB, brokerURL, token, stateDir string) result {
	t.Helper()
	return runCmd(t, env(), bins.connector, "enroll", "--broker", brokerURL, "--token", token, "--state-dir", stateDir)
}

// devices runs `device list --json` and returns the raw output and the
// devices it lists.
func (b *broker) devices() (string, []fieldpass.Device) {
	b.t.Helper()
	out := b.mustCLI("device", "list", "--json")
	var devs []fieldpass.Device
	if err := json.Unmarshal([]byte(out), &devs); err != nil {
		b.t.Fatalf("device list --json: %v\n%s", err, out)
	}
	return out, devs
}

func (b *broker) device(name string) (fieldpass.Device, bool) {
	b.t.Helper()
	_, devs := b.devices()
	for _, d := range devs {
		if d.Name == name {
			return d, true
		}
	}
	return fieldpass.Device{}, false
}

// waitDevice polls `device list --json` until device name satisfies cond,
// and returns it and how long that took. It fails the test after timeout,
// showing the device as last listed.
func (b *broker) waitDevice(name string, timeout time.Duration, what string, cond func(fieldpass.Device) bool) (fieldpass.Device, time.Duration) {
	b.t.Helper()
	start := time.Now()
	for {
		d, ok := b.device(name)
		if ok && cond(d) {
			return d, time.Since(start)
		}
		if time.Since(start) > timeout {
			js, _ := json.MarshalIndent(d, "", "  ")
			if !ok {
				js = []byte("(not listed)")
			}
			b.t.Fatalf("device %s: not %s after %s; last listed as:\n%s", name, what, timeout, js)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

func isOnline(d fieldpass.Device) bool  { return d.Presence.Online }
func isOffline(d fieldpass.Device) bool { return !d.Presence.Online }

// isOnlineWithEndpoint: the broker has also read the device's UDP endpoint
// from WireGuard, which it does on its presence tick (every 5 s), not at the
// hello.
func isOnlineWithEndpoint(d fieldpass.Device) bool {
	return d.Presence.Online && d.Presence.Endpoint != ""
}

// startConnector runs `fieldpass-connector run` for an enrolled state
// directory. args come after the state directory; without a --listen among
// them, WireGuard binds 127.0.0.1 only.
func startConnector(t *testing.T, name, stateDir string, args ...string) *proc {
	t.Helper()
	all := []string{"run", "--state-dir", stateDir, "--log-level", "debug"}
	if !containsFlag(args, "listen") {
		all = append(all, "--listen", "127.0.0.1:0")
	}
	all = append(all, args...)
	logPath := filepath.Join(t.TempDir(), "connector-"+name+".log")
	return startProc(t, "connector "+name, logPath, env(), bins.connector, all...)
}

func containsFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--"+name || a == "-"+name || strings.HasPrefix(a, "--"+name+"=") || strings.HasPrefix(a, "-"+name+"=") {
			return true
		}
	}
	return false
}

var udpPortRE = regexp.MustCompile(`connector starting.*udp_port=(\d+)`)

// udpPort is the WireGuard port a connector logged at start.
func (p *proc) udpPort(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := udpPortRE.FindStringSubmatch(p.log()); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("%s logged no udp_port", p.name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLog waits until the process's log matches re, and returns the match.
func (p *proc) waitLog(t testing.TB, timeout time.Duration, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindString(p.log()); m != "" {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no log line matching %q after %s", p.name, re, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t testing.TB, network string) string {
	t.Helper()
	var addr string
	switch network {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = c.LocalAddr().String()
		c.Close()
	}
	return addr
}

// echoService is a local TCP service for connectors to expose.
func echoService(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveConns(ln, echo)
	return ln.Addr().String()
}

// serveConns handles each connection ln accepts in a goroutine of its own,
// closing it afterwards, until ln is closed.
func serveConns(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// echo sends back what it reads until the peer closes.
func echo(c net.Conn) { io.Copy(c, c) }

// dirEntries lists dir's entries, or reports that it does not exist.
func dirEntries(dir string) (names []string, exists bool) {
	es, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false
	}
	for _, e := range es {
		names = append(names, e.Name())
	}
	if err != nil {
		names = append(names, "(error: "+err.Error()+")")
	}
	return names, true
}
