package bench_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/connector/httpsenroll"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// Fleet settings. The broker runs with its defaults (presence read every
// 5 s, keepalive 25 s on the devices).
const (
	// httpEnrolments is how many devices enrol through the broker's HTTP
	// API, as fieldpass-connector enroll does: its default per-client limit
	// is a burst of 10, then 1 a second, and every simulated device comes
	// from 127.0.0.1. The others are enrolled straight in Postgres with the
	// broker's own address allocator, which is all the HTTP handler adds.
	httpEnrolments = 10
	// fleetWave devices are started every fleetWaveGap, so the fleet comes
	// up in seconds without a handshake storm that would push wireguard-go
	// into its under-load cookie mode (which a real fleet's jittered
	// reconnects also avoid).
	fleetWave    = 50
	fleetWaveGap = 250 * time.Millisecond
	// fleetSample is how often the broker's RSS is sampled during the idle
	// window (FIELDPASS_BENCH_WINDOW, default 30 s), over which its CPU is
	// read too.
	fleetSample = 2 * time.Second
	// tunnelPrefix is the broker's default tunnel address space.
	tunnelPrefix = "10.77.0.0/16"
)

// BenchmarkFleet measures the broker's memory per idle connected device: the
// real fieldpass-broker binary in its own process, FIELDPASS_BENCH_DEVICES
// (default 1000) connectors in this one, each with its own key, netstack and
// UDP socket on 127.0.0.1. The broker's RSS is read from /proc with no
// devices, then as the median of samples over an idle window with all of
// them connected; its CPU over the same window. The simulator's own memory
// per device is reported too.
//
// The connected fleet first idles FIELDPASS_BENCH_SETTLE (default 150 s):
// long enough for every device to rekey once (120 s) and for the runtime's
// forced GC (every 2 min), because the broker's RSS keeps climbing for
// minutes after the fleet connects, as garbage accumulates towards the next
// GC goal. The window is FIELDPASS_BENCH_WINDOW (default 30 s). The broker
// runs with GODEBUG=gctrace=1, and its last GC line (live heap and goal) is
// logged beside the RSS.
//
// Run it once: FIELDPASS_BENCH=1 go test -run '^$' -bench Fleet -benchtime 1x.
// A higher -benchtime repeats only the idle window.
func BenchmarkFleet(b *testing.B) {
	gate(b)
	n := envInt(b, "FIELDPASS_BENCH_DEVICES", 1000)
	fleetWindow := envDuration(b, "FIELDPASS_BENCH_WINDOW", 30*time.Second)
	fleetSettle := envDuration(b, "FIELDPASS_BENCH_SETTLE", 150*time.Second)
	checkFDLimit(b, n+200)
	ctx := context.Background()
	dir := b.TempDir()

	bin, dbURL, key, keyFile := brokerOnNewDatabase(b, dir)
	wgEP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(b, "udp"))
	httpAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(b, "tcp"))
	publicURL := "http://" + httpAddr.String()
	serveArgs := []string{"serve", "--database-url", dbURL, "--wg-listen", wgEP.String(), "--http-listen", httpAddr.String(),
		"--public-url", publicURL, "--key-file", keyFile, "--init", "--broker-id", "bench-fleet"}
	br := startBrokerProcess(b, bin, filepath.Join(dir, "broker.log"), serveArgs...)
	brokertest.WaitFor(b, 30*time.Second, "broker answering /healthz", func() bool {
		resp, err := http.Get(publicURL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	time.Sleep(3 * time.Second)
	var rss0s []int64
	for range 5 {
		rss0s = append(rss0s, br.rss(b))
		time.Sleep(time.Second)
	}
	rss0 := median(rss0s)
	b.Logf("broker RSS with no devices: %d KiB (median of %v); %s", rss0, rss0s, br.lastGC())

	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	states := enrollFleet(b, db, n, publicURL, key.Public(), wgEP)
	b.Logf("enrolled %d devices in %s (%d through HTTP)", n, time.Since(start).Round(time.Millisecond), min(n, httpEnrolments))

	sim0 := selfMemory(b)
	start = time.Now()
	fleet := startFleet(b, states)
	defer fleet.stop()
	online := func() int {
		devs, err := db.Devices(ctx)
		if err != nil {
			return -1
		}
		k := 0
		for _, d := range devs {
			if d.Presence.Online {
				k++
			}
		}
		return k
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		c, o := fleet.connected(), online()
		if c == n && o == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("after %s: %d of %d connectors connected, %d online in the database\n%s",
				time.Since(start).Round(time.Second), c, n, o, br.logTail())
		}
		time.Sleep(time.Second)
	}
	connectTime := time.Since(start)
	b.Logf("all %d devices connected and online in %s", n, connectTime.Round(100*time.Millisecond))

	time.Sleep(fleetSettle)
	sim1 := selfMemory(b)
	b.Logf("after %s settling: broker RSS %d KiB; %s", fleetSettle, br.rss(b), br.lastGC())
	gcs0 := len(br.gcs())

	cpu0, err := procCPU(br.pid)
	if err != nil {
		b.Fatal(err)
	}
	windowStart := time.Now()
	var rssNs []int64
	for b.Loop() {
		for start := time.Now(); time.Since(start) < fleetWindow; {
			rssNs = append(rssNs, br.rss(b))
			time.Sleep(fleetSample)
		}
	}
	cpu1, err := procCPU(br.pid)
	if err != nil {
		b.Fatal(err)
	}
	window := time.Since(windowStart)
	if c := fleet.connected(); c != n {
		b.Fatalf("only %d of %d devices still connected after the idle window", c, n)
	}

	rssN := median(slices.Clone(rssNs))
	perDevice := float64(rssN-rss0) / float64(n)
	cpuPct := 100 * (cpu1 - cpu0).Seconds() / window.Seconds()
	simRSS := float64(sim1.rss-sim0.rss) / float64(n)
	simHeap := float64(sim1.heap-sim0.heap) / 1024 / float64(n)
	simStack := float64(sim1.stack-sim0.stack) / 1024 / float64(n)
	simG := float64(sim1.goroutines-sim0.goroutines) / float64(n)
	b.Logf("broker RSS samples with %d devices (KiB): %v", n, rssNs)
	b.Logf("broker garbage collections in the window: %d; %s", len(br.gcs())-gcs0, br.lastGC())
	if w := br.warnings(); len(w) > 0 {
		b.Logf("broker logged %d warnings or errors, the first: %s", len(w), w[0])
	}
	b.ReportMetric(perDevice, "broker-KiB/device")
	b.ReportMetric(float64(rss0), "broker-idle-KiB")
	b.ReportMetric(float64(rssN), "broker-fleet-KiB")
	b.ReportMetric(cpuPct, "broker-cpu-pct")
	b.ReportMetric(cpuPct*1000/float64(n), "broker-cpu-pct/1000-devices")
	b.ReportMetric(simRSS, "sim-KiB/device")
	b.ReportMetric(simG, "sim-goroutines/device")
	b.ReportMetric(connectTime.Seconds(), "connect-s")
	b.ReportMetric(0, "ns/op")
	target := "met"
	if perDevice > 64 {
		target = "NOT met"
	}
	b.Logf("fleet (%s, %d devices, %d CPUs): broker RSS %d KiB idle -> %d KiB connected = %.1f KiB per device (target <= 64: %s); "+
		"broker CPU %.2f%% of one core over %s idle (%.2f%% per 1000 devices); simulator %.0f KiB RSS, %.0f KiB heap, %.0f KiB stacks, %.1f goroutines per device; connected in %s",
		time.Now().Format("2006-01-02"), n, runtime.NumCPU(), rss0, rssN, perDevice, target, cpuPct, window.Round(time.Second), cpuPct*1000/float64(n),
		simRSS, simHeap, simStack, simG, connectTime.Round(100*time.Millisecond))

	if os.Getenv("FIELDPASS_BENCH_RESTART") != "0" {
		b.StopTimer()
		fleetRestart(b, db, br, bin, filepath.Join(dir, "broker-restarted.log"), serveArgs, n)
	}
}

// fleetRestart kills the broker (SIGKILL: a crash, so every presence row
// still says online and the new process calls each device back with a
// nudge, at the pace nudgePace sets for the fleet) and starts it again with
// the same arguments. A device is back when its presence row is online
// with a last_seen written by the new process (its hello). It reports the
// time from the new process's start until each device was back (p50, p99,
// max), the rate they came back at (overall and in the busiest second),
// and whether the broker dropped history events.
func fleetRestart(b *testing.B, db *postgres.DB, old *brokerProcess, bin, logPath string, args []string, n int) {
	ctx := context.Background()
	old.cmd.Process.Kill()
	<-old.done
	start := time.Now()
	sim0, busy0 := selfCPU(b), machineCPU(b)
	br := startBrokerProcess(b, bin, logPath, args...)
	if dir := os.Getenv("FIELDPASS_BENCH_SIM_LOG"); dir != "" {
		b.Logf("broker killed and started again at %s; its log is kept as %s", start.UTC().Format(time.RFC3339Nano), filepath.Join(dir, "broker-restarted.log"))
		defer func() {
			if log, err := os.ReadFile(logPath); err == nil {
				os.WriteFile(filepath.Join(dir, "broker-restarted.log"), log, 0o644)
			}
		}()
	}
	// Postgres keeps microseconds; a hello after start is newer than any
	// last_seen the old process wrote.
	back := make(map[string]time.Duration, n)
	deadline := start.Add(3 * time.Minute)
	for len(back) < n && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		devs, err := db.Devices(qctx)
		cancel()
		if err != nil {
			continue // the database is busy with the fleet's hellos
		}
		now := time.Since(start)
		for _, d := range devs {
			if _, ok := back[d.ID]; !ok && d.Presence.Online && d.Presence.LastSeen.After(start) {
				back[d.ID] = now
			}
		}
	}
	// Who used the two cores while the fleet came back: the new broker,
	// this process (the simulated connectors) and the machine as a whole
	// (Postgres and anything else is the rest).
	brokerCPU, err := procCPU(br.pid)
	if err != nil {
		b.Fatal(err)
	}
	simCPU, busy := selfCPU(b)-sim0, machineCPU(b).sub(busy0)
	b.Logf("during the restart (%s): broker %.1f s of CPU (%.2f ms per device back), simulator %.1f s, the machine %.0f %% busy (%.1f of %.1f CPU s)",
		time.Since(start).Round(time.Second), brokerCPU.Seconds(), brokerCPU.Seconds()*1000/float64(max(len(back), 1)), simCPU.Seconds(),
		100*busy.busy.Seconds()/max(busy.total.Seconds(), 1e-9), busy.busy.Seconds(), busy.total.Seconds())
	b.ReportMetric(brokerCPU.Seconds()*1000/float64(max(len(back), 1)), "restart-broker-cpu-ms/device")

	var times []int64
	perSecond := map[int64]int{}
	per10s := make([]int, 18) // the shape of the return, in the log either way
	for _, t := range back {
		times = append(times, int64(t))
		perSecond[int64(t/time.Second)]++
		per10s[min(int(t/(10*time.Second)), len(per10s)-1)]++
	}
	if len(back) < n {
		// Reported, not fatal: the figures above and the shape of the
		// return are what the run is for.
		b.Errorf("after the restart: %d of %d devices back in %s; back per 10 s: %v\n%s",
			len(back), n, time.Since(start).Round(time.Second), per10s, br.logTail())
		if len(back) == 0 {
			return
		}
	}
	slices.Sort(times)
	p50 := time.Duration(times[len(times)/2])
	p99 := time.Duration(times[min(len(times)-1, len(times)*99/100)])
	last := time.Duration(times[len(times)-1])
	first := time.Duration(times[0])
	peak := 0
	for _, k := range perSecond {
		peak = max(peak, k)
	}
	rate := float64(n) / max(last-first, time.Second).Seconds()
	var dropped int
	for _, w := range br.warnings() {
		if strings.Contains(w, "history queue full") || strings.Contains(w, "nudge queue full") {
			dropped++
		}
	}
	b.ReportMetric(p50.Seconds(), "restart-p50-s")
	b.ReportMetric(p99.Seconds(), "restart-p99-s")
	b.ReportMetric(last.Seconds(), "restart-max-s")
	b.ReportMetric(rate, "restart-devices/s")
	b.Logf("restart after SIGKILL (%d devices): back after p50 %s, p99 %s, max %s from the new process's start (first %s); "+
		"%.0f devices/s on average, %d in the busiest second (nudge pace for this fleet: %.0f/s); back per 10 s: %v; history or nudge events dropped: %d; %s",
		n, p50.Round(100*time.Millisecond), p99.Round(100*time.Millisecond), last.Round(100*time.Millisecond), first.Round(100*time.Millisecond),
		rate, peak, nudgeRate(n), per10s, dropped, br.lastGC())
}

// nudgeRate is the broker's nudge pace for a restart with queued devices
// waiting at the default --nudge-rate (broker.nudgePace): 50 a second, or
// what calls them all within 45 s, at most 1000.
func nudgeRate(queued int) float64 {
	return min(max(50, float64(queued)/45), 1000)
}

// selfCPU returns the user+system CPU time this process has used.
func selfCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuTimes is the machine's CPU time, all cores: busy and in all.
type cpuTimes struct{ busy, total time.Duration }

func (c cpuTimes) sub(d cpuTimes) cpuTimes { return cpuTimes{c.busy - d.busy, c.total - d.total} }

// machineCPU reads the machine's CPU time from /proc/stat's first line:
// user, nice, system, idle, iowait, irq, softirq, steal (guest time is
// already in user; idle and iowait are not busy).
func machineCPU(tb testing.TB) cpuTimes {
	tb.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		tb.Fatalf("parse /proc/stat: %q", line)
	}
	var c cpuTimes
	for i, v := range f[1:9] {
		ticks, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			tb.Fatalf("parse /proc/stat: %v", err)
		}
		d := time.Duration(ticks) * time.Second / clockTicks
		c.total += d
		if i != 3 && i != 4 { // idle, iowait
			c.busy += d
		}
	}
	return c
}

// checkFDLimit fails early if the fleet cannot have its sockets.
func checkFDLimit(tb testing.TB, need int) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur < uint64(need) {
		tb.Fatalf("open file limit %d, need %d: raise ulimit -n", lim.Cur, need)
	}
}

// buildBroker builds cmd/fieldpass-broker into dir, or returns the binary
// FIELDPASS_BENCH_BROKER names (to measure another build of it).
func buildBroker(tb testing.TB, dir string) string {
	tb.Helper()
	if bin := os.Getenv("FIELDPASS_BENCH_BROKER"); bin != "" {
		return bin
	}
	bin := filepath.Join(dir, "fieldpass-broker")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/fieldpass/fieldpass/cmd/fieldpass-broker")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build fieldpass-broker: %v\n%s", err, out)
	}
	return bin
}

// freePort returns a loopback port that was free a moment ago.
func freePort(tb testing.TB, network string) uint16 {
	tb.Helper()
	var addr net.Addr
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		addr = c.LocalAddr()
		c.Close()
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		addr = l.Addr()
		l.Close()
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		tb.Fatal(err)
	}
	return ap.Port()
}

// brokerProcess is a fieldpass-broker running in its own process.
type brokerProcess struct {
	cmd  *exec.Cmd
	pid  int
	log  string
	done chan struct{}
}

func startBrokerProcess(tb testing.TB, bin, logPath string, args ...string) *brokerProcess {
	tb.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// One line per GC on stderr: the live heap, which RSS alone hides
	// behind garbage not yet collected.
	cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatal(err)
	}
	p := &brokerProcess{cmd: cmd, pid: cmd.Process.Pid, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			tb.Errorf("broker did not stop within 30 s of SIGTERM; killing it")
			cmd.Process.Kill()
			<-p.done
		}
		if tb.Failed() {
			tb.Logf("broker log tail:\n%s", p.logTail())
		}
	})
	return p
}

func (p *brokerProcess) rss(tb testing.TB) int64 {
	tb.Helper()
	select {
	case <-p.done:
		tb.Fatalf("broker exited: %v\n%s", p.cmd.ProcessState, p.logTail())
	default:
	}
	kib, err := procRSS(p.pid)
	if err != nil {
		tb.Fatal(err)
	}
	return kib
}

var gcTraceRE = regexp.MustCompile(`^gc \d+ @`)

// gcs returns the broker's GODEBUG=gctrace=1 lines so far, one per garbage
// collection: "gc N @Ts ...: start->end->live MB heap, goal MB goal, ...".
func (p *brokerProcess) gcs() []string {
	b, _ := os.ReadFile(p.log)
	var gcs []string
	for _, l := range strings.Split(string(b), "\n") {
		if gcTraceRE.MatchString(l) {
			gcs = append(gcs, l)
		}
	}
	return gcs
}

// lastGC is the broker's last gctrace line.
func (p *brokerProcess) lastGC() string {
	gcs := p.gcs()
	if len(gcs) == 0 {
		return "no GC yet"
	}
	return "last GC: " + gcs[len(gcs)-1]
}

// warnings returns the broker's log lines at WARN or ERROR.
func (p *brokerProcess) warnings() []string {
	b, _ := os.ReadFile(p.log)
	var w []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			w = append(w, l)
		}
	}
	return w
}

func (p *brokerProcess) logTail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// enrollFleet enrols n devices: the first httpEnrolments through the
// broker's HTTP API with connector.Enroll, the rest straight in Postgres
// (token, then Enroll with the broker's allocator), writing each
// connector.State as enrolment would.
func enrollFleet(tb testing.TB, db *postgres.DB, n int, brokerURL string, brokerKey wgnet.Key, wgEP netip.AddrPort) []*connector.State {
	tb.Helper()
	ctx := context.Background()
	states := make([]*connector.State, n)
	root := tb.TempDir()
	for i := range min(n, httpEnrolments) {
		tok, _, err := db.CreateEnrollmentToken(ctx, deviceName(i), nil, time.Hour)
		if err != nil {
			tb.Fatal(err)
		}
		s, err := httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: brokerURL, Token: tok, StateDir: filepath.Join(root, deviceName(i))})
		if err != nil {
			tb.Fatalf("enrol %s over HTTP: %v", deviceName(i), err)
		}
		states[i] = s
	}
	prefix := netip.MustParsePrefix(tunnelPrefix)
	allocate := func(seq int64) (netip.Addr, error) { return fieldpass.TunnelAddress(prefix, seq) }
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, 8)
	)
	next.Store(int64(min(n, httpEnrolments)))
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				s, err := enrollDirect(ctx, db, deviceName(i), allocate, brokerURL, brokerKey, prefix, wgEP)
				if err != nil {
					errs <- err
					return
				}
				states[i] = s
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatal(err)
	}
	return states
}

func enrollDirect(ctx context.Context, db *postgres.DB, name string, allocate func(int64) (netip.Addr, error),
	brokerURL string, brokerKey wgnet.Key, prefix netip.Prefix, wgEP netip.AddrPort) (*connector.State, error) {
	tok, _, err := db.CreateEnrollmentToken(ctx, name, nil, time.Hour)
	if err != nil {
		return nil, err
	}
	priv, err := wgnet.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	d, err := db.Enroll(ctx, tok, priv.Public().String(), fieldpass.Version, allocate)
	if err != nil {
		return nil, fmt.Errorf("enrol %s: %w", name, err)
	}
	return &connector.State{
		BrokerURL:     brokerURL,
		DeviceID:      d.ID,
		DeviceName:    d.Name,
		TunnelAddress: d.TunnelAddr,
		BrokerAddress: fieldpass.BrokerTunnelAddress(prefix),
		BrokerPort:    tunnel.BrokerPort,
		BrokerKey:     brokerKey.String(),
		Endpoints:     []string{wgEP.String()},
		MTU:           tunnel.DefaultMTU,
		PrivateKey:    priv,
	}, nil
}

func deviceName(i int) string { return "sim-" + strconv.Itoa(i) }

// fleet is the simulated devices: one connector each.
type fleet struct {
	conns   []*connector.Connector
	cancels []context.CancelFunc
	dones   []chan error
	once    sync.Once
}

// startFleet starts a connector per state, fleetWave at a time, and returns
// without waiting for them to connect.
//
// The devices send from FIELDPASS_BENCH_SOURCES loopback addresses
// (default 1, 127.0.0.1: every device behind one address, as behind a
// carrier's NAT; up to 62,500, 127.1.0.1 and on, round robin). It matters
// to a broker under a handshake flood: wireguard-go then answers at most 20
// handshake messages a second from one address.
func startFleet(tb testing.TB, states []*connector.State) *fleet {
	tb.Helper()
	sources := envInt(tb, "FIELDPASS_BENCH_SOURCES", 1)
	if sources < 1 || sources > 62500 {
		tb.Fatalf("FIELDPASS_BENCH_SOURCES=%d: want 1 to 62500", sources)
	}
	source := func(i int) netip.Addr {
		if sources == 1 {
			return netip.MustParseAddr("127.0.0.1")
		}
		k := i % sources
		return netip.AddrFrom4([4]byte{127, 1, byte(k / 250), byte(k%250 + 1)})
	}
	// FIELDPASS_BENCH_SIM_LOG=DIR: every 100th simulated connector logs at
	// debug level into DIR/sim-N.log, to follow a sample of the fleet.
	logDir := os.Getenv("FIELDPASS_BENCH_SIM_LOG")
	f := &fleet{}
	tb.Cleanup(f.stop)
	for i, s := range states {
		if i > 0 && i%fleetWave == 0 {
			time.Sleep(fleetWaveGap)
		}
		var log *slog.Logger
		if logDir != "" && i%100 == 0 {
			w, err := os.Create(filepath.Join(logDir, deviceName(i)+".log"))
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { w.Close() })
			log = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		c, err := connector.New(connector.Config{
			State:      s,
			Services:   map[string]string{"ssh": "127.0.0.1:22"},
			ListenAddr: netip.AddrPortFrom(source(i), 0),
			// Bounded so the test ends in bounded time if the broker
			// refuses some at first.
			MaxBackoff:  10 * time.Second,
			NetworkPoll: -1,
			Logger:      log,
		})
		if err != nil {
			tb.Fatalf("connector %d: %v", i, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		f.conns = append(f.conns, c)
		f.cancels = append(f.cancels, cancel)
		f.dones = append(f.dones, done)
	}
	return f
}

func (f *fleet) connected() int {
	n := 0
	for _, c := range f.conns {
		if c.Connected() {
			n++
		}
	}
	return n
}

func (f *fleet) stop() {
	f.once.Do(func() {
		for _, cancel := range f.cancels {
			cancel()
		}
		var wg sync.WaitGroup
		for i, c := range f.conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-f.dones[i]
				c.Close()
			}()
		}
		wg.Wait()
	})
}

// memory is this process's memory after a forced GC.
type memory struct {
	rss         int64 // KiB
	heap, stack uint64
	goroutines  int
}

func selfMemory(tb testing.TB) memory {
	tb.Helper()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := procRSS(os.Getpid())
	if err != nil {
		tb.Fatal(err)
	}
	return memory{rss: rss, heap: ms.HeapAlloc, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
}

// brokerOnNewDatabase builds fieldpass-broker into dir, migrates a new
// database with it, and writes a new WireGuard key to a file for --key-file.
func brokerOnNewDatabase(b *testing.B, dir string) (bin, dbURL string, key wgnet.Key, keyFile string) {
	b.Helper()
	bin = buildBroker(b, dir)
	dbURL = pgtest.NewDatabase(b)
	if out, err := exec.Command(bin, "migrate", "--database-url", dbURL).CombinedOutput(); err != nil {
		b.Fatalf("fieldpass-broker migrate: %v\n%s", err, out)
	}
	key, err := wgnet.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	keyFile = filepath.Join(dir, "broker.key")
	if err := os.WriteFile(keyFile, []byte(key.String()+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	return bin, dbURL, key, keyFile
}
