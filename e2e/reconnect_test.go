//go:build linux

package e2e_test

import (
	"bufio"
	"fmt"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
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
	startConnector(t, "pump-7", dir, "--service", "echo="+svc)

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
	if err := fw.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	fw.wait(t, 10*time.Second)
	s = eng.waitSession(t, "the forward's session ended", func(s fieldpass.Session) bool { return s.ID == session.ID && !s.Open() })
	if s.EndReason != fieldpass.EndClientClosed || s.DeviceReconnects != 1 || s.StreamsCut != 1 {
		t.Errorf("ended session %+v: want client_closed, 1 reconnect, 1 stream cut", s)
	}
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
