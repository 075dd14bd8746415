//go:build linux

package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"

	"github.com/fieldpass/fieldpass/postgres"
)

// The reconnect storm: a fleet behind the carrier NAT comes back after its
// broker was killed (SIGKILL, no goodbye) and restarted on the same key,
// ports and database.
const (
	// stormCellSize is how many connectors share one device namespace (a
	// "cell"). Each connector is its own process with its own UDP socket on
	// a random port, so the carrier NAT gives each its own mapping; what a
	// namespace per device would add is only its own APN address, at six
	// `ip` runs and a veth pair each: 500 namespaces would take longer to
	// build than the storm takes to pass.
	stormCellSize = 50
	// stormBound is the correctness bound on a restart: every connector
	// has said hello to the new broker this long after it was started.
	// Measured figures are logged; this only catches a fleet that does
	// not come back.
	stormBound = 90 * time.Second
	// stormMaxShare is the largest share of the fleet allowed to come back
	// within one 100 ms window: a synchronised retry would put most of it
	// there.
	stormMaxShare  = 0.25
	stormMinSpread = 100 // fleets smaller than this are not held to it
	// Per connector, for the resource check, with margin: threads
	// (measured about 10) and memory of a non-race build (measured 13.2
	// MiB resident, of which 4.5 MiB its own: 900 connectors took 4 GiB
	// off MemAvailable).
	stormThreadsPer = 16
	stormMemPer     = 16 << 20
)

// TestFieldReconnectStorm: N connectors (FIELDPASS_E2E_STORM_DEVICES,
// default 200), each a real `fieldpass-connector run` process behind the
// carrier NAT, are enrolled over HTTPS from the NAT's one public address,
// come online, and then see their broker SIGKILLed and restarted. Every one
// must be back (a new `online` row in device_events) within stormBound of
// the restart, and they must not come back in one burst: the busiest 100 ms
// holds at most stormMaxShare of them.
//
// What spreads them: a connector whose broker vanished without a FIN does
// not notice by itself (no application heartbeat; its tunnel check waits
// for WireGuard's reject-after time). The restarted broker loads the devices
// the database still shows online and nudges each (a TCP SYN inside the
// tunnel, which makes it handshake towards the device's last endpoint,
// through the NAT mapping the device's keepalives hold open) from one queue
// at most broker.Config.NudgeRate (50) per second with the gap jittered
// (broker/tunnel.go nudgeLoop). The nudged connector ends its dead session
// and redials after a full-jitter backoff delay (connector/connector.go
// backoff: uniform in [MinBackoff/2, MinBackoff] on the first retry), so
// even two devices nudged together do not dial together. A connector
// whose nudge was lost is caught by the broker's presence loop (it talks
// but has no session: nudged again) or by its own retries, also jittered.
//
// The figures (min/p50/p90/p99/max, a histogram per second, the busiest
// 100 ms, connector memory, phase durations) are logged, not asserted.
func TestFieldReconnectStorm(t *testing.T) {
	t.Parallel()
	n := 200
	if s := os.Getenv("FIELDPASS_E2E_STORM_DEVICES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("FIELDPASS_E2E_STORM_DEVICES=%q: want a positive number", s)
		}
		n = v
	}
	testStart := time.Now()
	f := newFieldNet(t)
	checkStormResources(t, n)
	bin := stormConnectorBin(t)

	// Every enrolment comes from the carrier's one public address, which
	// the default limiter (burst 10, then 1/s per address) would hold to
	// a trickle: allow the whole fleet at once, as for a factory line.
	limit := strconv.Itoa(n + 10)
	b := f.startBroker("--enroll-rate", limit, "--enroll-burst", limit)

	cells := make([]*fieldDevice, (n+stormCellSize-1)/stormCellSize)
	for i := range cells {
		cells[i] = f.addDevice(fmt.Sprintf("cell-%d", i+1))
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("storm-%03d", i+1)
	}
	cellOf := func(i int) *fieldDevice { return cells[i/stormCellSize] }
	t.Logf("storm: %d connectors in %d cell namespaces of up to %d behind the carrier NAT (non-race connector %s)",
		n, len(cells), stormCellSize, bin)

	// Enrol: tokens straight from the store (the method `token create`
	// uses, one database round trip each instead of one CLI process
	// each), then the connectors' own `enroll` over HTTPS, a few at once.
	phase := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tokens := stormTokens(t, ctx, b.dbURL, names)
	stateDirs := make([]string, n)
	root := t.TempDir()
	for i := range stateDirs {
		stateDirs[i] = filepath.Join(root, names[i])
	}
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ectx, ecancel := context.WithTimeout(ctx, time.Minute)
			defer ecancel()
			cmd := exec.CommandContext(ectx, "ip", cellOf(i).ns.argv(bin, "enroll",
				"--broker", b.URL(), "--token", tokens[i], "--state-dir", stateDirs[i])...)
			cmd.Env = f.env()
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("enrol %s: %v: %s", names[i], err, bytes.TrimSpace(out))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	enrolTook := time.Since(phase)

	// Start the fleet a few at a time, as devices powering up do, and
	// wait until the broker has them all online with an endpoint: a
	// restarted broker can nudge only a device whose endpoint it knows.
	// Each exposes one service (run requires one), never used here.
	phase = time.Now()
	procs := make([]*proc, n)
	logs := t.TempDir()
	for i := range names {
		if i > 0 && i%5 == 0 {
			time.Sleep(100 * time.Millisecond)
		}
		procs[i] = startProc(t, "connector "+names[i], filepath.Join(logs, names[i]+".log"), f.env(),
			"ip", cellOf(i).ns.argv(bin, "run", "--state-dir", stateDirs[i],
				"--log-level", "info", "--service", "echo=127.0.0.1:7")...)
	}
	conn, err := pgx.Connect(ctx, b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	onlineWait := max(90*time.Second, time.Duration(n)*300*time.Millisecond)
	for {
		var online, withEndpoint int
		err := conn.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE online), count(*) FILTER (WHERE online AND coalesce(endpoint, '') <> '')
			FROM devices WHERE name LIKE 'storm-%'`).Scan(&online, &withEndpoint)
		if err != nil {
			t.Fatal(err)
		}
		if withEndpoint == n {
			break
		}
		for i, p := range procs {
			if p.exited() {
				t.Fatalf("connector %s exited: %v\n%s", names[i], p.err, tail(p.log(), 20))
			}
		}
		if time.Since(phase) > onlineWait {
			var lacking []string
			rows, _ := conn.Query(ctx, `SELECT name FROM devices WHERE name LIKE 'storm-%' AND NOT (online AND coalesce(endpoint, '') <> '') ORDER BY name`)
			for rows.Next() {
				var name string
				rows.Scan(&name)
				lacking = append(lacking, name)
			}
			rows.Close()
			var said []string
			for _, line := range strings.Split(b.p.log(), "\n") {
				if len(lacking) > 0 && strings.Contains(line, "device="+lacking[0]+" ") {
					said = append(said, line)
				}
			}
			t.Fatalf("after %s, %d of %d devices online, %d with an endpoint; not online with one: %v\nthe broker on %v:\n%s",
				onlineWait, online, n, withEndpoint, lacking, lacking[:min(1, len(lacking))], strings.Join(said, "\n"))
		}
		time.Sleep(time.Second)
	}
	onlineTook := time.Since(phase)
	rss, anon, rssMax := connectorMemory(procs)

	// The crash: SIGKILL, so no session is closed and the database still
	// shows the fleet online; then the restart on the same key, ports and
	// database, as systemd would.
	logAt := make([]int, n)
	early := 0 // connectors nudged off a session before the crash
	for i, p := range procs {
		l := p.log()
		logAt[i] = len(l)
		early += strings.Count(l, "broker nudged")
	}
	killedAt := time.Now()
	if err := b.p.signal(syscall.SIGKILL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	restartedAt := b.restart()
	healthyIn := time.Since(restartedAt)

	back := map[string]time.Time{}
	for {
		rows, err := conn.Query(ctx, `
			SELECT d.name, min(e.at) FROM device_events e JOIN devices d ON d.id = e.device_id
			WHERE e.kind = 'online' AND e.at > $1 AND d.name LIKE 'storm-%'
			GROUP BY d.name`, killedAt)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name string
			var at time.Time
			if err := rows.Scan(&name, &at); err != nil {
				t.Fatal(err)
			}
			back[name] = at
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		// History rows are written asynchronously: allow a few seconds
		// past the bound for the last ones to land.
		if len(back) == n || time.Since(restartedAt) > stormBound+5*time.Second {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}

	// How each came back, from its own log: nudged by the broker, or on
	// its own retry.
	nudged := 0
	for i, p := range procs {
		if l := p.log(); len(l) >= logAt[i] && strings.Contains(l[logAt[i]:], "broker nudged") {
			nudged++
		}
	}

	delays := make([]time.Duration, 0, n)
	var late, missing []string
	for _, name := range names {
		at, ok := back[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		d := at.Sub(restartedAt)
		if d > stormBound {
			late = append(late, fmt.Sprintf("%s (%s)", name, d.Round(time.Millisecond)))
		}
		delays = append(delays, d)
	}
	slices.Sort(delays)

	t.Logf("storm: N=%d; enrolment %s, start until all online with an endpoint %s; connectors' memory: resident %d MiB in all (%.1f MiB each on average, %.1f at most), of which anonymous (their own) %d MiB",
		n, enrolTook.Round(time.Millisecond), onlineTook.Round(time.Millisecond),
		rss>>20, float64(rss)/float64(n)/(1<<20), float64(rssMax)/(1<<20), anon>>20)
	t.Logf("storm: before the crash, %d sessions were ended by a nudge (want none: a nudge is for a connection from the broker's previous life)", early)
	if early > n/10 {
		// A broker that nudges devices between their handshake and their
		// hello ends most new sessions of a fleet coming up (it did).
		t.Errorf("%d of %d connectors had a new session ended by a nudge before any restart", early, n)
	}
	t.Logf("storm: broker SIGKILLed, restart began %s later, healthy %s after that; %d of %d devices back within %s (%d reconnected on a nudge, %d on their own retry)",
		restartedAt.Sub(killedAt).Round(time.Millisecond), healthyIn.Round(time.Millisecond),
		len(delays)-len(late), n, stormBound, nudged, n-len(missing)-nudged)
	if len(delays) > 0 {
		t.Logf("storm: reconnect after the restart: min %s, p50 %s, p90 %s, p99 %s, max %s",
			delays[0].Round(time.Millisecond), roundMS(quantile(delays, 0.5)), roundMS(quantile(delays, 0.9)),
			roundMS(quantile(delays, 0.99)), delays[len(delays)-1].Round(time.Millisecond))
		busiest, busiestAt := busiestWindow(delays, 100*time.Millisecond)
		t.Logf("storm: busiest 100 ms window (from %s): %d devices, %.1f%% of the fleet",
			busiestAt.Round(time.Millisecond), busiest, 100*float64(busiest)/float64(n))
		t.Logf("storm: devices back per second after the restart:\n%s", histogram(delays, time.Second))
		// Below stormMinSpread devices, nudges at NudgeRate fit in a
		// second or so and a window holds a large share by arithmetic.
		if share := float64(busiest) / float64(n); n >= stormMinSpread && share > stormMaxShare {
			t.Errorf("%d of %d devices (%.0f%%) came back within one 100 ms window: want at most %.0f%%, the fleet retried in step",
				busiest, n, 100*share, 100*stormMaxShare)
		}
	}
	if len(missing) > 0 || len(late) > 0 {
		show := missing
		if len(show) > 10 {
			show = append(show[:10:10], fmt.Sprintf("and %d more", len(missing)-10))
		}
		t.Errorf("not back within %s of the restart: %d missing %v, %d late %v", stormBound, len(missing), show, len(late), late)
		for _, name := range missing[:min(3, len(missing))] {
			i := slices.Index(names, name)
			t.Logf("---- connector %s log ----\n%s", name, tail(procs[i].log(), 30))
		}
	}
	t.Logf("storm: wall time %s", time.Since(testStart).Round(time.Millisecond))
}

// stormConnectorBin is a fieldpass-connector built without the race
// detector, which multiplies a process's memory several times: under
// `make test` (-race) hundreds of race-built connectors would not fit.
// Without -race it is TestMain's own binary. It is built once per test
// binary, with the same version, into a directory beside TestMain's, which
// is removed with it when the test binary ends.
func stormConnectorBin(t *testing.T) string {
	t.Helper()
	if !raceBuild {
		return bins.connector
	}
	stormBin.once.Do(func() {
		path := filepath.Join(filepath.Dir(bins.connector), "norace", "fieldpass-connector")
		cmd := exec.Command("go", "build", "-tags", "enroll_https", "-ldflags", "-X github.com/fieldpass/fieldpass.Version="+bins.version,
			"-o", path, "./cmd/fieldpass-connector")
		cmd.Dir = bins.moduleRoot
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			stormBin.err = fmt.Errorf("go build ./cmd/fieldpass-connector (without -race): %v\n%s", err, out)
			return
		}
		stormBin.path = path
		t.Logf("built a non-race connector in %s", time.Since(start).Round(time.Millisecond))
	})
	if stormBin.err != nil {
		t.Fatal(stormBin.err)
	}
	return stormBin.path
}

var stormBin struct {
	once sync.Once
	path string
	err  error
}

// checkStormResources fails the test, saying what is short, if this
// machine cannot hold n more connector processes: file descriptors in this
// process (Go holds a pidfd per child), threads and pids system-wide, and
// memory.
func checkStormResources(t *testing.T, n int) {
	t.Helper()
	var problems []string
	var nofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err == nil && nofile.Cur < uint64(n+1024) {
		problems = append(problems, fmt.Sprintf("RLIMIT_NOFILE is %d: want at least %d (a descriptor per child, plus the test's own); raise it with ulimit -n", nofile.Cur, n+1024))
	}
	need := n * stormThreadsPer
	tasks := 0
	if b, err := os.ReadFile("/proc/loadavg"); err == nil { // "0.1 0.2 0.3 running/total lastpid"
		if fs := strings.Fields(string(b)); len(fs) >= 4 {
			if _, total, ok := strings.Cut(fs[3], "/"); ok {
				tasks, _ = strconv.Atoi(total)
			}
		}
	}
	for _, lim := range []string{"/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"} {
		if v := readInt(lim); v > 0 && tasks+need > v {
			problems = append(problems, fmt.Sprintf("%s is %d, %d tasks run already: %d connectors need about %d more threads", lim, v, tasks, n, need))
		}
	}
	if v := readInt("/sys/fs/cgroup/pids.max"); v > 0 && readInt("/sys/fs/cgroup/pids.current")+need > v {
		problems = append(problems, fmt.Sprintf("cgroup pids.max is %d: %d connectors need about %d threads", v, n, need))
	}
	if avail := memAvailable(); avail > 0 && avail < int64(n)*stormMemPer {
		problems = append(problems, fmt.Sprintf("%d MiB of memory available: %d connectors need about %d MiB", avail>>20, n, int64(n)*stormMemPer>>20))
	}
	if len(problems) > 0 {
		t.Fatalf("this machine cannot hold %d connector processes (set FIELDPASS_E2E_STORM_DEVICES lower):\n  %s", n, strings.Join(problems, "\n  "))
	}
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return v
}

func memAvailable() int64 {
	fh, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer fh.Close()
	s := bufio.NewScanner(fh)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// stormTokens creates one enrolment token per name through the store, with
// the method and audit record `fieldpass-broker token create` uses.
func stormTokens(t *testing.T, ctx context.Context, dbURL string, names []string) []string {
	t.Helper()
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tokens := make([]string, len(names))
	for i, name := range names {
		if tokens[i], _, err = db.CreateEnrollmentTokenAudited(ctx, "e2e-storm", name, nil, time.Hour); err != nil {
			t.Fatalf("token for %s: %v", name, err)
		}
	}
	return tokens
}

// connectorMemory sums the processes' resident memory (VmRSS, which
// counts the shared binary in each) and the anonymous part of it (RssAnon,
// each one's own), and gives the largest VmRSS.
func connectorMemory(procs []*proc) (rss, anon, most int64) {
	for _, p := range procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			switch k {
			case "VmRSS":
				rss += kb << 10
				most = max(most, kb<<10)
			case "RssAnon":
				anon += kb << 10
			}
		}
	}
	return rss, anon, most
}

// busiestWindow is the most of sorted ds within any window of width w, and
// where that window starts.
func busiestWindow(ds []time.Duration, w time.Duration) (most int, from time.Duration) {
	j := 0
	for i := range ds {
		for ds[i]-ds[j] >= w {
			j++
		}
		if i-j+1 > most {
			most, from = i-j+1, ds[j]
		}
	}
	return most, from
}

// histogram draws sorted ds in bins of width w, one line per bin from the
// first to the last, with a bar scaled to the fullest bin.
func histogram(ds []time.Duration, w time.Duration) string {
	if len(ds) == 0 {
		return ""
	}
	first, last := int(ds[0]/w), int(ds[len(ds)-1]/w)
	counts := make([]int, last-first+1)
	for _, d := range ds {
		counts[int(d/w)-first]++
	}
	most := slices.Max(counts)
	var sb strings.Builder
	for i, c := range counts {
		bar := strings.Repeat("#", (c*50+most-1)/most)
		fmt.Fprintf(&sb, "  %3d-%3ds %4d %s\n", first+i, first+i+1, c, bar)
	}
	return strings.TrimRight(sb.String(), "\n")
}
