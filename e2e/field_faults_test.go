//go:build linux

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// echoConn is a live connection to the device's echo service through a
// running `fieldpass forward`, dialled in the engineer's namespace.
type echoConn struct {
	c   net.Conn
	buf []byte
}

func dialEcho(t *testing.T, ns netns, local string) *echoConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := ns.dial(ctx, "tcp", local)
	if err != nil {
		t.Fatalf("dial the forward at %s: %v", local, err)
	}
	t.Cleanup(func() { c.Close() })
	e := &echoConn{c: c}
	if err := e.ping(10 * time.Second); err != nil {
		t.Fatalf("first echo through the forward: %v", err)
	}
	return e
}

// ping sends a line and waits for it to come back, within timeout.
func (e *echoConn) ping(timeout time.Duration) error {
	msg := []byte(fmt.Sprintf("ping %d\n", time.Now().UnixNano()))
	e.c.SetDeadline(time.Now().Add(timeout))
	defer e.c.SetDeadline(time.Time{})
	if _, err := e.c.Write(msg); err != nil {
		return err
	}
	if cap(e.buf) < len(msg) {
		e.buf = make([]byte, len(msg))
	}
	got := e.buf[:len(msg)]
	if _, err := io.ReadFull(e.c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// sessionsNow lists every session, as the admin sees them.
func (s *fieldSetup) sessionsNow(t *testing.T) []fieldpass.Session {
	t.Helper()
	return decode[[]fieldpass.Session](t, s.admin.mustRun(t, "sessions", "--json"))
}

// waitSessions polls the sessions until cond holds for the list.
func (s *fieldSetup) waitSessions(t *testing.T, timeout time.Duration, what string, cond func([]fieldpass.Session) bool) []fieldpass.Session {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ss := s.sessionsNow(t)
		if cond(ss) {
			return ss
		}
		if time.Now().After(deadline) {
			js, _ := json.MarshalIndent(ss, "", "  ")
			t.Fatalf("not %s after %s; sessions:\n%s", what, timeout, js)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func openCount(ss []fieldpass.Session) int {
	n := 0
	for _, s := range ss {
		if s.Open() {
			n++
		}
	}
	return n
}

// sessionAudit counts, per session, the session.start and session.end
// events in the audit log.
func (s *fieldSetup) sessionAudit(t *testing.T) (starts, ends map[string]int) {
	t.Helper()
	// Field names match case-insensitively, whatever case the CLI uses.
	evs := decode[[]struct{ Action, Target string }](t, s.admin.mustRun(t, "audit", "--json"))
	starts, ends = map[string]int{}, map[string]int{}
	for _, e := range evs {
		id := strings.TrimPrefix(e.Target, "session:")
		switch e.Action {
		case fieldpass.AuditSessionStart:
			starts[id]++
		case fieldpass.AuditSessionEnd:
			ends[id]++
		}
	}
	return starts, ends
}

// checkAuditOnce checks that every session has exactly one start and one
// end event in the hash chain, and that the chain verifies.
func (s *fieldSetup) checkAuditOnce(t *testing.T, ss []fieldpass.Session) {
	t.Helper()
	starts, ends := s.sessionAudit(t)
	for _, x := range ss {
		if starts[x.ID] != 1 || ends[x.ID] != 1 {
			t.Errorf("session %s (%s, %s): %d session.start and %d session.end events, want one each", x.ID, x.Service, x.EndReason, starts[x.ID], ends[x.ID])
		}
	}
	if len(starts) != len(ss) || len(ends) != len(ss) {
		t.Errorf("audit log has %d session starts and %d ends for %d sessions", len(starts), len(ends), len(ss))
	}
	if r := s.b.cli("audit", "verify"); r.code != 0 {
		t.Errorf("audit verify: %v", r)
	}
}

// TestFieldBrokerRestart: the broker crashes (SIGKILL) with an ssh session
// and a forward open through it, and systemd starts it again. The device's
// connector is back within a bound we report; the sessions open at the
// crash end as broker_restart, each with one start and one end in the audit
// log; new sessions work.
func TestFieldBrokerRestart(t *testing.T) {
	t.Parallel()
	s := newFieldSetup(t)

	sshArgs := append(append([]string{"ssh", s.sshd.user + "@pump-7", "--"}, s.sshd.clientOptions()...), "echo started; exec sleep 600")
	sshSess := startCmd(t, s.engineer.env, "ip", s.engineer.ns.argv(bins.cli, sshArgs...)...)
	sshSess.waitOutput(t, 30*time.Second, regexp.MustCompile(`^started\n`))
	local, fwd := s.engineer.forward(t, "pump-7", "echo")
	echo := dialEcho(t, s.f.eng, local)
	s.waitSessions(t, 15*time.Second, "two sessions open", func(ss []fieldpass.Session) bool { return openCount(ss) == 2 })

	s.b.p.kill()
	crashed := time.Now()
	s.b.restart()
	healthy := time.Since(crashed)
	_, back := s.b.waitDevice("pump-7", 60*time.Second, "online after the restart", isOnline)
	back = time.Since(crashed)

	// The people's side: both clients learn their session is gone.
	sshSess.wait(t, 30*time.Second)
	fwd.wait(t, 30*time.Second)
	if sshSess.code == 0 || fwd.code == 0 {
		t.Errorf("ssh exited %d, forward %d after the broker crashed: want failures", sshSess.code, fwd.code)
	}
	if err := echo.ping(2 * time.Second); err == nil {
		t.Error("the forward's connection still echoes after the crash")
	}
	ss := s.waitSessions(t, 30*time.Second, "both sessions ended", func(ss []fieldpass.Session) bool { return len(ss) == 2 && openCount(ss) == 0 })
	for _, x := range ss {
		if x.EndReason != fieldpass.EndBrokerRestart || x.End.Before(x.Start) {
			t.Errorf("session %s (%s) ended %s at %s: want broker_restart", x.ID, x.Service, x.EndReason, x.End)
		}
	}

	// New sessions work, and the log holds each session exactly once.
	if r := s.ssh(t, "echo after-restart"); r.code != 0 || r.stdout != "after-restart\n" {
		t.Fatalf("ssh after the restart: %v", r)
	}
	ss = s.waitSessions(t, 15*time.Second, "three sessions, all ended", func(ss []fieldpass.Session) bool { return len(ss) == 3 && openCount(ss) == 0 })
	s.checkAuditOnce(t, ss)
	t.Logf("broker SIGKILLed and restarted: healthy again after %s, device online %s after the crash; "+
		"ssh noticed after %s, forward after %s",
		healthy.Round(time.Millisecond), back.Round(time.Millisecond),
		sshSess.exitAt.Sub(crashed).Round(time.Millisecond), fwd.exitAt.Sub(crashed).Round(time.Millisecond))
}

// TestFieldPostgresOutage: the broker loses Postgres. New sessions are
// refused with a clear message; open ones go on for the audit grace, then
// end as audit_unavailable; one closed by its client inside the grace keeps
// its own reason; every end is written once Postgres is back, each once; the
// broker recovers without a restart.
func TestFieldPostgresOutage(t *testing.T) {
	t.Parallel()
	const grace = 8 * time.Second
	s := newFieldSetup(t, "--audit-grace", grace.String())

	localA, fwdA := s.engineer.forward(t, "pump-7", "echo")
	echoA := dialEcho(t, s.f.eng, localA)
	localB, fwdB := s.engineer.forward(t, "pump-7", "echo")
	dialEcho(t, s.f.eng, localB)
	s.waitSessions(t, 15*time.Second, "two sessions open", func(ss []fieldpass.Session) bool { return openCount(ss) == 2 })
	pid := s.b.p.pid()

	s.f.pg.setDown(true)
	down := time.Now()

	// A new session is refused, saying why.
	r := s.ssh(t, "echo should-not-run")
	refusedIn := time.Since(down)
	if r.code == 0 || strings.Contains(r.stdout, "should-not-run") || !strings.Contains(r.stderr, "database is unavailable") {
		t.Errorf("%v\nwant a refusal naming the database", r)
	}
	t.Logf("new session during the outage: refused after %s: %s", refusedIn.Round(time.Millisecond), lastLine(r.stderr))
	// The broker says it is not ready, and is alive.
	if code := s.statusOf(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the outage: %d, want 503", code)
	}
	if code := s.statusOf(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during the outage: %d, want 200", code)
	}

	// Inside the grace, A carries on; B's client goes away.
	if err := echoA.ping(5 * time.Second); err != nil {
		t.Fatalf("session A cut inside the grace (%s after the outage began): %v", time.Since(down).Round(time.Millisecond), err)
	}
	fwdB.cmd.Process.Signal(syscall.SIGINT)
	fwdB.wait(t, 15*time.Second)
	// After the grace, A is ended by the broker.
	fwdA.wait(t, grace+20*time.Second)
	endedAfter := fwdA.exitAt.Sub(down)
	if !strings.Contains(fwdA.stderr.String(), string(fieldpass.EndAuditUnavailable)) {
		t.Errorf("forward A: exit %d, stderr %q: want it to report audit_unavailable", fwdA.code, fwdA.stderr)
	}
	if endedAfter < grace {
		t.Errorf("session A ended %s after the outage began, inside the %s grace", endedAfter, grace)
	}

	// Postgres comes back: both ends are written, each once; nothing else
	// changed and no process restarted.
	downFor := time.Since(down)
	s.f.pg.setDown(false)
	ss := s.waitSessions(t, 60*time.Second, "both ends written", func(ss []fieldpass.Session) bool { return len(ss) == 2 && openCount(ss) == 0 })
	reasons := map[fieldpass.EndReason]int{}
	for _, x := range ss {
		reasons[x.EndReason]++
	}
	if reasons[fieldpass.EndAuditUnavailable] != 1 || reasons[fieldpass.EndClientClosed] != 1 {
		t.Errorf("end reasons %v: want one audit_unavailable (A) and one client_closed (B)", reasons)
	}
	if s.b.p.exited() || s.b.p.pid() != pid || s.b.runs != 1 {
		t.Errorf("the broker restarted or exited (pid %d, was %d)", s.b.p.pid(), pid)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.statusOf(t, "/readyz") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz not ready 30s after Postgres came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := s.ssh(t, "echo after-outage"); r.code != 0 || r.stdout != "after-outage\n" {
		t.Fatalf("ssh after the outage: %v", r)
	}
	ss = s.waitSessions(t, 15*time.Second, "three sessions, all ended", func(ss []fieldpass.Session) bool { return len(ss) == 3 && openCount(ss) == 0 })
	s.checkAuditOnce(t, ss)
	t.Logf("Postgres down %s: a new session refused after %s; the open one ended %s after the outage began (grace %s); all ends written after it came back",
		downFor.Round(time.Millisecond), refusedIn.Round(time.Millisecond), endedAfter.Round(time.Millisecond), grace)
}

// statusOf is the broker's HTTP status for path.
func (s *fieldSetup) statusOf(t *testing.T, path string) int {
	t.Helper()
	resp, err := s.b.client.Get(s.b.URL() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}
