//go:build linux

package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// fleetLeaseTTL is the fleet's --lease-ttl: the shortest allowed, so that a
// dead broker's devices move within seconds.
const fleetLeaseTTL = 3 * time.Second

// TestFleet: three real brokers share one Postgres and one WireGuard key,
// each on its own ports, linked by mutual TLS from a CA the test makes.
// Four devices, enrolled through different brokers (each broker lists its
// own WireGuard endpoint first, then the others'), so each broker holds
// one and broker-b two. A person's `fieldpass forward` through every
// broker reaches every device, and the session row names the holder and,
// when another broker served the person, that one. Then broker-b is
// killed (SIGKILL): its devices are held by a surviving broker
// within the lease TTL plus the janitor's sweep and a reconnect, the dead
// broker is claimed once and its open session ended once
// (broker_restart), the audit chain verifies, and a forward through each
// survivor reaches the moved device again.
func TestFleet(t *testing.T) {
	t.Parallel()
	fleet, dbURL := startFleetOf3(t)
	db := superuserConn(t, dbURL)

	// One device enrolled through each broker, and a second through
	// broker-b, the one to be killed: two devices to move.
	devices := []string{"pump-1", "pump-2", "pump-3", "pump-4"}
	enrolledAt := map[string]*broker{"pump-1": fleet[0], "pump-2": fleet[1], "pump-3": fleet[2], "pump-4": fleet[1]}
	conns := map[string]*proc{}
	for _, name := range devices {
		// --max-backoff 2s: a connector whose broker died tries the next
		// endpoint within seconds, not minutes.
		conns[name] = startConnector(t, name, enrolledAt[name].enroll(name), "--service", "echo="+echoService(t), "--max-backoff", "2s")
	}
	for _, name := range devices {
		waitHolder(t, db, name, 30*time.Second, func(h string) bool { return h == enrolledAt[name].id })
	}

	ops := fleet[0].tokenPerson("ops@example.com", fieldpass.RoleAdmin)
	eng := fleet[0].tokenPerson("eng@example.com", fieldpass.RoleEngineer)
	for _, name := range devices {
		if r := ops.run(t, "grant", "create", "--user", "eng@example.com", "--device", name, "--service", "echo",
			"--duration", "1h", "--reason", "fleet test"); r.code != 0 {
			t.Fatalf("grant create: %v", r)
		}
	}
	// eng's CLI pointed at broker b: the same token works at every broker
	// (users and tokens live in the shared database).
	engAt := func(b *broker) person {
		return person{name: "eng at " + b.id, env: append(slices.Clone(eng.env), "FIELDPASS_BROKER="+b.URL())}
	}

	known := map[string]bool{}
	// forwardThrough runs `fieldpass forward` at broker b for device,
	// echoes a line through it, ends it, and returns its session row.
	forwardThrough := func(t *testing.T, b *broker, device string) fieldpass.Session {
		t.Helper()
		p := engAt(b)
		fw := startCmd(t, p.env, bins.cli, "forward", device, "echo")
		local := fw.waitOutput(t, 30*time.Second, regexp.MustCompile(`^forwarding (\S+) to `+device+`/echo\n`))[1]
		c := dialForward(t, local)
		mustEcho(t, c, "via "+b.id+" to "+device)
		c.Close()
		fw.cmd.Process.Signal(os.Interrupt)
		fw.wait(t, 10*time.Second)
		s := p.waitSession(t, "the forward's session ended", func(s fieldpass.Session) bool {
			return !known[s.ID] && s.Device == device && !s.Open()
		})
		known[s.ID] = true
		return s
	}

	t.Run("every broker reaches every device", func(t *testing.T) {
		for _, b := range fleet {
			for _, name := range devices {
				holder := leaseHolder(t, db, name)
				s := forwardThrough(t, b, name)
				wantServed := b.id
				if b.id == holder {
					wantServed = "" // the holder served the person itself
				}
				if s.BrokerID != holder || s.ServedBy != wantServed || s.EndReason != fieldpass.EndClientClosed {
					t.Errorf("forward through %s to %s (held by %s): session broker_id %q served_by %q ended %q; want %q, %q, client_closed",
						b.id, name, holder, s.BrokerID, s.ServedBy, s.EndReason, holder, wantServed)
				}
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// A session left open at the broker to be killed, served by another
	// (carried over the link): the holder records it, so the holder's end
	// must close it.
	victim := fleet[1]
	served := fleet[0]
	held := devices[1]
	if h := leaseHolder(t, db, held); h != victim.id {
		t.Fatalf("%s is held by %s, want %s", held, h, victim.id)
	}
	open := startCmd(t, engAt(served).env, bins.cli, "forward", held, "echo")
	local := open.waitOutput(t, 30*time.Second, regexp.MustCompile(`^forwarding (\S+) to `+held+`/echo\n`))[1]
	oc := dialForward(t, local)
	defer oc.Close()
	mustEcho(t, oc, "before the kill")
	openSess := eng.waitSession(t, "the open session", func(s fieldpass.Session) bool {
		return !known[s.ID] && s.Device == held && s.Open()
	})
	known[openSess.ID] = true
	if openSess.BrokerID != victim.id || openSess.ServedBy != served.id {
		t.Errorf("open session: broker_id %q served_by %q, want %q, %q", openSess.BrokerID, openSess.ServedBy, victim.id, served.id)
	}

	var survivors []*broker
	for _, b := range fleet {
		if b != victim {
			survivors = append(survivors, b)
		}
	}
	killed := time.Now()
	if err := victim.p.signal(syscall.SIGKILL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Its devices are held by survivors within the lease TTL plus the
	// connector's backoff (and the janitor's sweep, every TTL).
	movedTo := map[string]string{}
	var took []string
	for _, name := range devices {
		if enrolledAt[name] != victim {
			continue
		}
		movedTo[name] = waitHolder(t, db, name, 30*time.Second, func(h string) bool { return h != "" && h != victim.id })
		took = append(took, fmt.Sprintf("%s to %s in %s", name, movedTo[name], time.Since(killed).Round(time.Millisecond)))
	}
	// Exactly one survivor claimed the dead broker; when, out of the
	// failover time, is in its log.
	claimRE := regexp.MustCompile(`(?m)^time=(\S+) .*msg="broker gone without a clean stop.* broker=` + victim.id + ` `)
	var claims []string
	for _, b := range survivors {
		for _, m := range claimRE.FindAllStringSubmatch(b.p.log(), -1) {
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				t.Fatalf("%s logged a claim at %q: %v", b.id, m[1], err)
			}
			claims = append(claims, fmt.Sprintf("claimed by %s %s after the kill", b.id, at.Sub(killed).Round(time.Millisecond)))
		}
	}
	if len(claims) != 1 {
		t.Errorf("%s claimed %d times, want once: %q", victim.id, len(claims), claims)
	}
	t.Logf("FIGURE fleet failover after SIGKILL of %s (lease TTL %s, connector --max-backoff 2s, race detector %v): %s; %s",
		victim.id, fleetLeaseTTL, raceBuild, strings.Join(claims, ", "), strings.Join(took, ", "))
	moved := movedTo[held]
	for _, name := range devices {
		// The API agrees with the lease: online, at the holder.
		want := movedTo[name]
		if want == "" {
			want = enrolledAt[name].id
			// The other devices stayed where they were.
			if h := leaseHolder(t, db, name); h != want {
				t.Errorf("%s moved from %s to %q when %s died", name, want, h, victim.id)
			}
		}
		survivors[0].waitDevice(name, 10*time.Second, "online at "+want, func(d fieldpass.Device) bool {
			return d.Presence.Online && d.Presence.BrokerID == want
		})
	}

	// The dead broker's open session: ended broker_restart, once.
	s := eng.waitSession(t, "the killed broker's session ended", func(s fieldpass.Session) bool {
		return s.ID == openSess.ID && !s.Open()
	})
	if s.EndReason != fieldpass.EndBrokerRestart {
		t.Errorf("the killed broker's session ended %q, want broker_restart", s.EndReason)
	}
	var ends int
	if err := db.QueryRow(context.Background(),
		`SELECT count(*) FROM audit_events WHERE action = $1 AND target = $2`,
		fieldpass.AuditSessionEnd, "session:"+openSess.ID).Scan(&ends); err != nil {
		t.Fatal(err)
	}
	if ends != 1 {
		t.Errorf("%d audit events end session %s, want 1", ends, openSess.ID)
	}
	var open0 int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM sessions WHERE ended_at IS NULL AND broker_id = $1`, victim.id).Scan(&open0); err != nil {
		t.Fatal(err)
	}
	if open0 != 0 {
		t.Errorf("%d sessions of %s still open", open0, victim.id)
	}
	// The person's connection, carried from broker-a to the dead holder,
	// was cut with the link.
	oc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := oc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the connection carried to %s still open after it died: read %d bytes, %v", victim.id, n, err)
	}
	open.cmd.Process.Signal(os.Interrupt)
	open.wait(t, 10*time.Second)
	t.Logf("forward through %s, its device's broker killed, said: %q", served.id, strings.TrimSpace(open.stderr.String()))

	// A new forward through each survivor reaches the moved device.
	for _, b := range survivors {
		s := forwardThrough(t, b, held)
		wantServed := b.id
		if b.id == moved {
			wantServed = ""
		}
		if s.BrokerID != moved || s.ServedBy != wantServed {
			t.Errorf("after the failover, forward through %s: broker_id %q served_by %q, want %q, %q", b.id, s.BrokerID, s.ServedBy, moved, wantServed)
		}
	}

	if r := survivors[0].cli("audit", "verify", "--database-url", dbURL); r.code != 0 {
		t.Errorf("audit verify: %v", r)
	}
	for name, c := range conns {
		if c.exited() {
			t.Errorf("connector %s exited: %v", name, c.err)
		}
	}

}

// fleetFailoverTime is how long a device of the fleet may be held by no
// broker when one goes: its lease running out (fleetLeaseTTL), the
// janitor's next look (TTL/3) and the connector's --max-backoff 2s. A
// clean stop, which hands its devices off at once, must do no worse.
const fleetFailoverTime = fleetLeaseTTL + fleetLeaseTTL/3 + 2*time.Second

// TestFleetRollingRestart: three real brokers, a device held by each; each
// broker in turn stops cleanly (SIGTERM), while a person's `fieldpass
// forward` through it is carrying a connection to a device another broker
// holds, and starts again once stopped; the next waits until it is ready.
// Throughout, device_leases is read every 50 ms: no device is held by no
// broker for longer than the failover time. After each stop, a forward
// through another broker reaches every device. At the end every session is
// ended and recorded ended once, and the audit chain verifies.
func TestFleetRollingRestart(t *testing.T) {
	t.Parallel()
	fleet, dbURL := startFleetOf3(t)
	db := superuserConn(t, dbURL)
	devices := []string{"pump-1", "pump-2", "pump-3"}
	conns := map[string]*proc{}
	for i, name := range devices {
		conns[name] = startConnector(t, name, fleet[i].enroll(name), "--service", "echo="+echoService(t), "--max-backoff", "2s")
	}
	for i, name := range devices {
		waitHolder(t, db, name, 30*time.Second, func(h string) bool { return h == fleet[i].id })
	}
	ops := fleet[0].tokenPerson("ops@example.com", fieldpass.RoleAdmin)
	eng := fleet[0].tokenPerson("eng@example.com", fieldpass.RoleEngineer)
	for _, name := range devices {
		if r := ops.run(t, "grant", "create", "--user", "eng@example.com", "--device", name, "--service", "echo",
			"--duration", "1h", "--reason", "rolling restart test"); r.code != 0 {
			t.Fatalf("grant create: %v", r)
		}
	}
	engAt := func(b *broker) person {
		return person{name: "eng at " + b.id, env: append(slices.Clone(eng.env), "FIELDPASS_BROKER="+b.URL())}
	}
	// forward starts `fieldpass forward` through b to device and echoes a
	// line through it.
	forward := func(b *broker, device, line string) (*running, *net.TCPConn) {
		t.Helper()
		fw := startCmd(t, engAt(b).env, bins.cli, "forward", device, "echo")
		local := fw.waitOutput(t, 30*time.Second, regexp.MustCompile(`^forwarding (\S+) to `+device+`/echo\n`))[1]
		c := dialForward(t, local)
		mustEcho(t, c, line)
		return fw, c
	}

	watch := watchHolders(t, dbURL, devices)
	var steps []string
	for i, b := range fleet {
		// A person's connection carried through b to the next broker's
		// device: b's stop ends it.
		held := devices[(i+1)%len(devices)]
		holder := leaseHolder(t, db, held)
		if holder == b.id || holder == "" {
			t.Fatalf("%s held by %q: want another broker than %s", held, holder, b.id)
		}
		fw, c := forward(b, held, "through "+b.id+" before its restart")

		stopped := time.Now()
		if err := b.p.signal(syscall.SIGTERM, 30*time.Second); err != nil {
			t.Fatalf("%s on SIGTERM: %v", b.id, err)
		}
		stopTook := time.Since(stopped)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the connection through %s still open after it stopped: read %d bytes, %v", b.id, n, err)
		}
		c.Close()
		fw.cmd.Process.Signal(os.Interrupt)
		fw.wait(t, 10*time.Second)

		// Every device held by a broker still running, and reached
		// through the next one.
		var took []string
		for _, name := range devices {
			h := waitHolder(t, db, name, 30*time.Second, func(h string) bool { return h != "" && h != b.id })
			took = append(took, fmt.Sprintf("%s at %s", name, h))
		}
		next := fleet[(i+1)%len(fleet)]
		for _, name := range devices {
			// A lease is taken at the device's hello, a moment before its
			// tunnel is up: "offline" until then. Within the failover time
			// from the stop, the device must be reached.
			for {
				fw := startCmd(t, engAt(next).env, bins.cli, "forward", name, "echo")
				m := waitForwardOrExit(fw, 30*time.Second, regexp.MustCompile(`^forwarding (\S+) to `+name+`/echo\n`))
				if m == nil && strings.Contains(fw.stderr.String(), "is offline") && time.Since(stopped) < fleetFailoverTime {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				if m == nil {
					t.Fatalf("forward through %s to %s, %s after %s's stop: exit %d, stderr %q", next.id, name,
						time.Since(stopped).Round(time.Millisecond), b.id, fw.code, fw.stderr)
				}
				c := dialForward(t, m[1])
				mustEcho(t, c, "through "+next.id+" while "+b.id+" is down")
				c.Close()
				fw.cmd.Process.Signal(os.Interrupt)
				fw.wait(t, 10*time.Second)
				break
			}
		}
		started := b.restart()
		steps = append(steps, fmt.Sprintf("%s exited %s after SIGTERM, started again and ready in %s (while down: %s)",
			b.id, stopTook.Round(time.Millisecond), time.Since(started).Round(time.Millisecond), strings.Join(took, ", ")))
	}
	gaps := watch.stop()
	var worst []string
	for _, name := range devices {
		worst = append(worst, fmt.Sprintf("%s %s", name, gaps[name].Round(10*time.Millisecond)))
		if gaps[name] > fleetFailoverTime {
			t.Errorf("%s held by no broker for %s during the rolling restart; the failover time is %s", name, gaps[name].Round(10*time.Millisecond), fleetFailoverTime)
		}
	}
	t.Logf("FIGURE fleet rolling restart (lease TTL %s, connector --max-backoff 2s, race detector %v): longest time held by no broker: %s; %s",
		fleetLeaseTTL, raceBuild, strings.Join(worst, ", "), strings.Join(steps, "; "))

	// Every session ended, each recorded ended once.
	rows, err := db.Query(context.Background(), `
		SELECT s.id::text, s.ended_at IS NOT NULL, count(a.target) FROM sessions s
		LEFT JOIN audit_events a ON a.action = $1 AND a.target = 'session:' || s.id::text
		GROUP BY s.id, s.ended_at`, fieldpass.AuditSessionEnd)
	if err != nil {
		t.Fatal(err)
	}
	type sessionEnds struct {
		id    string
		ended bool
		ends  int
	}
	ss, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sessionEnds, error) {
		var s sessionEnds
		err := r.Scan(&s.id, &s.ended, &s.ends)
		return s, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := 4 * len(fleet); len(ss) != want {
		t.Errorf("%d sessions recorded, want %d (one per forward)", len(ss), want)
	}
	for _, s := range ss {
		if !s.ended || s.ends != 1 {
			t.Errorf("session %s: ended %v, %d audit events end it; want ended, once", s.id, s.ended, s.ends)
		}
	}
	if r := fleet[0].cli("audit", "verify", "--database-url", dbURL); r.code != 0 {
		t.Errorf("audit verify: %v", r)
	}
	for name, c := range conns {
		if c.exited() {
			t.Errorf("connector %s exited: %v", name, c.err)
		}
	}
}

// holderWatch reads device_leases every 50 ms, on a connection of its own,
// and keeps, per device, the longest time it was held by no broker.
type holderWatch struct {
	done    chan struct{}
	once    sync.Once
	stopped chan map[string]time.Duration
	exited  chan struct{} // the goroutine is done with its connection
}

func watchHolders(t *testing.T, dbURL string, devices []string) *holderWatch {
	t.Helper()
	db := superuserConn(t, dbURL)
	w := &holderWatch{done: make(chan struct{}), stopped: make(chan map[string]time.Duration, 1), exited: make(chan struct{})}
	// A test that failed first: stop, and wait, before the connection is
	// closed (cleanups run last first: superuserConn's runs after this).
	t.Cleanup(func() { w.once.Do(func() { close(w.done) }); <-w.exited })
	go func() {
		defer close(w.exited)
		longest := map[string]time.Duration{}
		since := map[string]time.Time{} // when each device was last seen held by nobody, first
		for {
			now := time.Now()
			rows, err := db.Query(context.Background(), `
				SELECT d.name FROM device_leases l JOIN devices d ON d.id = l.device_id WHERE l.expires_at > now()`)
			held := map[string]bool{}
			if err == nil {
				names, cerr := pgx.CollectRows(rows, pgx.RowTo[string])
				for _, n := range names {
					held[n] = true
				}
				err = cerr
			}
			if err == nil {
				for _, name := range devices {
					if held[name] {
						if s, ok := since[name]; ok {
							longest[name] = max(longest[name], now.Sub(s))
							delete(since, name)
						}
					} else if _, ok := since[name]; !ok {
						since[name] = now
					}
				}
			}
			select {
			case <-w.done:
				for name, s := range since { // still held by nobody
					longest[name] = max(longest[name], time.Since(s))
				}
				w.stopped <- longest
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *holderWatch) stop() map[string]time.Duration {
	w.once.Do(func() { close(w.done) })
	return <-w.stopped
}

// startFleetOf3 starts broker-a, broker-b and broker-c on one new database
// and one WireGuard key, each listing its own WireGuard endpoint first,
// then the others', linked by mutual TLS from a CA made here, with
// --lease-ttl fleetLeaseTTL.
func startFleetOf3(t *testing.T) ([]*broker, string) {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	dir := t.TempDir()
	ca := brokertest.NewLinkCA(t)
	keyFile := filepath.Join(dir, "fleet.key")

	names := []string{"broker-a", "broker-b", "broker-c"}
	wgAddrs := make([]string, len(names))
	for i := range names {
		wgAddrs[i] = freeAddr(t, "udp")
	}
	var fleet []*broker
	for i, id := range names {
		caFile, cert, key := ca.Files(t, dir, id)
		// Its own endpoint first: a device enrolled here dials here first.
		eps := append([]string{wgAddrs[i]}, slices.Delete(slices.Clone(wgAddrs), i, i+1)...)
		b := &broker{t: t, dir: t.TempDir(), dbURL: dbURL, id: id, wgAddr: wgAddrs[i], keyFile: keyFile}
		// One at a time: the first creates the fleet's key file (--init),
		// the others load it.
		for attempt := 1; ; attempt++ {
			b.httpAddr = freeAddr(t, "tcp")
			b.args = []string{
				"--peer-listen", freeAddr(t, "tcp"), "--peer-cert", cert, "--peer-key", key, "--peer-ca", caFile,
				"--lease-ttl", fleetLeaseTTL.String(),
			}
			for _, ep := range eps {
				b.args = append(b.args, "--wg-endpoint", ep)
			}
			err := b.start()
			if err == nil {
				break
			}
			// The TCP ports were free a moment ago; another test may have
			// taken one since (the WireGuard ports are in every broker's
			// endpoints, so they stay).
			if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
				t.Fatal(err)
			}
			t.Logf("retrying on other ports: %v", err)
		}
		fleet = append(fleet, b)
	}
	return fleet, dbURL
}

// leaseHolder is the broker holding device's unexpired lease, or "".
func leaseHolder(t *testing.T, db *pgx.Conn, device string) string {
	t.Helper()
	var h string
	err := db.QueryRow(context.Background(), `
		SELECT l.broker_id FROM device_leases l JOIN devices d ON d.id = l.device_id
		WHERE d.name = $1 AND l.expires_at > now()`, device).Scan(&h)
	if err != nil && err != pgx.ErrNoRows {
		t.Fatal(err)
	}
	return h
}

// waitHolder polls device_leases until device's holder satisfies ok, and
// returns it.
func waitHolder(t *testing.T, db *pgx.Conn, device string, timeout time.Duration, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h := leaseHolder(t, db, device)
		if ok(h) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: lease held by %q after %s", device, h, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitForwardOrExit waits until fw's stdout matches re (the submatches), or
// fw exits first (nil).
func waitForwardOrExit(fw *running, timeout time.Duration, re *regexp.Regexp) []string {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(fw.stdout.String()); m != nil {
			return m
		}
		select {
		case <-fw.done:
			return re.FindStringSubmatch(fw.stdout.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
