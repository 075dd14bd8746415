//go:build linux

package e2e_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// sshd is a real OpenSSH server on a free loopback port, with its own host
// key and configuration in a temporary directory, letting in one client key
// for the user running the tests.
type sshd struct {
	addr    string // 127.0.0.1:port
	user    string // the account the client key logs in to
	keyFile string // the client's private key, for ssh -i
	p       *proc
}

// sshdPath is the absolute path of sshd (it re-executes itself, so a
// relative one will not do), or "" when OpenSSH is not installed.
func sshdPath() string {
	if p, err := exec.LookPath("sshd"); err == nil && filepath.IsAbs(p) {
		return p
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err == nil {
		return "/usr/sbin/sshd"
	}
	return ""
}

// needOpenSSH skips the test when the OpenSSH server or client is missing.
func needOpenSSH(t *testing.T) {
	t.Helper()
	var missing []string
	if sshdPath() == "" {
		missing = append(missing, "sshd (openssh-server)")
	}
	for _, c := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c+" (openssh-client)")
		}
	}
	if len(missing) > 0 {
		t.Skipf("OpenSSH is not installed here: no %s", strings.Join(missing, ", "))
	}
}

// sshKeygen makes an ed25519 key pair without a passphrase at path (and
// path.pub), and returns the public key line.
func sshKeygen(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fieldpass-e2e", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return string(pub)
}

const sshdConfig = `# sshd for one e2e test: this client key only.
ListenAddress %s
Port %d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
AllowUsers %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
# PAM would run the distribution's account and session modules, some of
# which (pam_loginuid) fail in containers.
UsePAM no
# The key files live under the world-writable temporary directory.
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
# The device's shell is /bin/sh without the test account's profile: a
# host's login scripts (this machine's root runs pyenv's init, which can
# wait a minute on a stale lock) are not the device under test. sshd runs
# this with the account's shell and -c: a shell that reads no profile.
ForceCommand if [ -n "$SSH_ORIGINAL_COMMAND" ]; then exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"; else exec /bin/sh -i; fi
`

// startSSHD starts sshd in the foreground (-D), logging to its proc log
// (-e), and waits until it listens on a free loopback port.
func startSSHD(t *testing.T) *sshd {
	t.Helper()
	return startSSHDIn(t, "")
}

// startSSHDIn starts sshd in namespace ns (a device's), listening on all of
// its addresses at port 22 as a device's would; ns "" is loopback in the
// test's own namespace, on a free port.
func startSSHDIn(t *testing.T, ns netns) *sshd {
	t.Helper()
	path := sshdPath()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &sshd{user: me.Username, keyFile: filepath.Join(dir, "client_ed25519")}
	hostKey := filepath.Join(dir, "host_ed25519")
	sshKeygen(t, hostKey)
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, []byte(sshKeygen(t, s.keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// As root, sshd confines its unprivileged half to this directory
		// and refuses to start without it; the package creates it at boot.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("privilege separation directory: %v", err)
		}
	}
	for attempt := 1; ; attempt++ {
		listenIP := "127.0.0.1"
		if ns == "" {
			s.addr = freeAddr(t, "tcp")
		} else {
			listenIP, s.addr = "0.0.0.0", "127.0.0.1:22"
		}
		_, port, _ := net.SplitHostPort(s.addr)
		var portNum int
		fmt.Sscan(port, &portNum)
		config := filepath.Join(dir, fmt.Sprintf("sshd_config.%d", attempt))
		text := fmt.Sprintf(sshdConfig, listenIP, portNum, hostKey, filepath.Join(dir, "sshd.pid"), authorized, s.user)
		if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(path, "-t", "-f", config).CombinedOutput(); err != nil {
			t.Fatalf("sshd -t -f %s: %v\n%s", config, err, out)
		}
		name, logPath, argv := fmt.Sprintf("sshd (attempt %d)", attempt), filepath.Join(dir, fmt.Sprintf("sshd.%d.log", attempt)), []string{"-D", "-e", "-f", config}
		if ns == "" {
			s.p = startProc(t, name, logPath, env(), path, argv...)
		} else {
			s.p = startProc(t, name+" in "+string(ns), logPath, env(), "ip", ns.argv(path, argv...)...)
		}
		listening := regexp.MustCompile(`Server listening on ` + regexp.QuoteMeta(listenIP) + ` port ` + port)
		deadline := time.Now().Add(10 * time.Second)
		for !listening.MatchString(s.p.log()) && !s.p.exited() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		switch {
		case listening.MatchString(s.p.log()):
			return s
		case attempt < 3 && strings.Contains(s.p.log(), "Address already in use"):
			t.Logf("sshd: port %s was taken, trying another", port)
			s.p.kill()
			continue
		}
		t.Fatalf("sshd did not start listening on %s:\n%s", s.addr, tail(s.p.log(), 30))
	}
}

// connections counts the connections sshd has logged.
func (s *sshd) connections() int {
	return strings.Count(s.p.log(), "Connection from 127.0.0.1")
}

// clientOptions are the ssh options that log in with the test's key and
// nothing else: no user configuration, no known_hosts, no prompt.
func (s *sshd) clientOptions() []string {
	return []string{
		"-F", "/dev/null",
		"-i", s.keyFile,
		"-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=30",
	}
}

// tap is a counting relay in front of sshd: the connector's ssh service
// points at it, so the test knows how many connections reached the device's
// sshd and exactly how many bytes each carried, to hold the broker's
// session counts against.
type tap struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []*tapConn
}

// tapConn is one connection through the tap.
type tapConn struct {
	in   atomic.Int64  // from the connector to sshd: the person's bytes
	out  atomic.Int64  // from sshd to the connector
	done chan struct{} // closed once both directions have ended
}

func startTap(t *testing.T, target string) *tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go tp.serve()
	return tp
}

func (tp *tap) addr() string { return tp.ln.Addr().String() }

func (tp *tap) serve() {
	for {
		c, err := tp.ln.Accept()
		if err != nil {
			return
		}
		tc := &tapConn{done: make(chan struct{})}
		tp.mu.Lock()
		tp.conns = append(tp.conns, tc)
		tp.mu.Unlock()
		go tc.relay(c.(*net.TCPConn), tp.target)
	}
}

func (tc *tapConn) relay(c *net.TCPConn, target string) {
	defer close(tc.done)
	defer c.Close()
	d, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		return
	}
	up := d.(*net.TCPConn)
	defer up.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src *net.TCPConn, n *atomic.Int64) {
		defer wg.Done()
		m, _ := io.Copy(dst, src)
		n.Add(m)
		dst.CloseWrite()
	}
	go pipe(up, c, &tc.in)
	go pipe(c, up, &tc.out)
	wg.Wait()
}

// count is how many connections have come through so far.
func (tp *tap) count() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.conns)
}

// bytes waits for connections [from, to) to end, and returns the bytes
// they carried each way.
func (tp *tap) bytes(t *testing.T, from, to int) (in, out int64) {
	t.Helper()
	tp.mu.Lock()
	conns := append([]*tapConn(nil), tp.conns...)
	tp.mu.Unlock()
	if to > len(conns) {
		t.Fatalf("tap: %d connections so far, want at least %d", len(conns), to)
	}
	for i, c := range conns[from:to] {
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			t.Fatalf("tap: connection %d to sshd still open", from+i)
		}
		in += c.in.Load()
		out += c.out.Load()
	}
	return in, out
}

// running is a command left running in the background (fieldpass login,
// ssh, forward) while the test reads its output.
type running struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{} // closed once it has exited
	exitAt time.Time     // read after done
	code   int           // read after done
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startCmd starts bin in the background; it is killed when the test ends.
func startCmd(t *testing.T, environ []string, bin string, args ...string) *running {
	t.Helper()
	r := &running{cmd: exec.Command(bin, args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	r.cmd.Env = environ
	r.cmd.Stdout, r.cmd.Stderr = r.stdout, r.stderr
	// Its own process group, so that the cleanup also ends what it
	// started (ssh, and ssh's ProxyCommand).
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		err := r.cmd.Wait()
		r.exitAt = time.Now()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.code = ee.ExitCode()
		} else if err != nil {
			r.code = -1
		}
		close(r.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	})
	return r
}

// waitOutput waits until stdout matches re and returns the submatches.
func (r *running) waitOutput(t *testing.T, timeout time.Duration, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(r.stdout.String()); m != nil {
			return m
		}
		select {
		case <-r.done:
			t.Fatalf("%s exited (status %d) before printing %q\nstdout: %q\nstderr: %q", r.cmd.Path, r.code, re, r.stdout, r.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s printed no %q in %s\nstdout: %q\nstderr: %q", r.cmd.Path, re, timeout, r.stdout, r.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for the command to exit.
func (r *running) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %s\nstdout: %q\nstderr: %q", r.cmd.Path, timeout, r.stdout, r.stderr)
	}
}
