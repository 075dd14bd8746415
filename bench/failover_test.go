package bench_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/postgres"
)

// BenchmarkFailover measures how long a broker's devices are without a
// broker when it goes: three real fieldpass-broker processes share one
// Postgres and one WireGuard key (serve --peer-listen, mutual TLS between
// them from a CA made here, --lease-ttl FIELDPASS_BENCH_LEASE_TTL, default
// the production 15 s), FIELDPASS_BENCH_DEVICES (default 1000) connectors
// in this process, device i listing broker i mod 3's endpoint first and the
// other two after it (so a connector's own move spreads too). Each broker
// holds a third. Then:
//
//	kill:  broker-b is killed (SIGKILL). Its devices are held again once the
//	       janitor has claimed it (its lease TTL ran out) and a survivor has
//	       called them back, or once a connector, finding its broker silent,
//	       moved to its next endpoint by itself, whichever comes first.
//	stop:  broker-c stops cleanly (SIGTERM), the case of a rolling restart:
//	       its leases end at once and it hands its devices to broker-a.
//
// For each, the time from the signal until each of the broker's devices is
// held by another (device_leases, read every 100 ms), as p50/p90/p99/max,
// where they went, and how many went to the broker the janitor (or the
// stopping broker) assigned them to. The lease TTL is the baseline a crash
// cannot beat: no broker may take a device before the dead one's lease has
// run out.
//
// Run it once: FIELDPASS_BENCH=1 go test -run '^$' -bench Failover -benchtime 1x ./bench/
func BenchmarkFailover(b *testing.B) {
	gate(b)
	n := envInt(b, "FIELDPASS_BENCH_DEVICES", 1000)
	ttl := envDuration(b, "FIELDPASS_BENCH_LEASE_TTL", 15*time.Second)
	checkFDLimit(b, n+300)
	ctx := context.Background()
	dir := b.TempDir()

	bin, dbURL, key, keyFile := brokerOnNewDatabase(b, dir)
	ca := brokertest.NewLinkCA(b)
	ids := []string{"broker-a", "broker-b", "broker-c"}
	eps := make([]netip.AddrPort, len(ids))
	for i := range ids {
		eps[i] = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(b, "udp"))
	}
	procs := map[string]*brokerProcess{}
	var urls []string
	for i, id := range ids {
		caFile, cert, certKey := ca.Files(b, dir, id)
		httpAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(b, "tcp"))
		peerAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(b, "tcp"))
		url := "http://" + httpAddr.String()
		procs[id] = startBrokerProcess(b, bin, filepath.Join(dir, id+".log"),
			"serve", "--database-url", dbURL, "--wg-listen", eps[i].String(), "--http-listen", httpAddr.String(),
			"--public-url", url, "--key-file", keyFile, "--broker-id", id,
			"--peer-listen", peerAddr.String(), "--peer-cert", cert, "--peer-key", certKey, "--peer-ca", caFile,
			"--lease-ttl", ttl.String())
		urls = append(urls, url)
	}
	for _, url := range urls {
		brokertest.WaitFor(b, 30*time.Second, url+" answering /healthz", func() bool {
			resp, err := http.Get(url + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}

	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	states := enrollFleet(b, db, n, urls[0], key.Public(), eps[0])
	for i, s := range states {
		var list []string
		for k := range eps {
			list = append(list, eps[(i+k)%len(eps)].String())
		}
		s.Endpoints = list
	}
	sql, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer sql.Close(context.Background())

	start := time.Now()
	fleet := startFleet(b, states)
	defer fleet.stop()
	// Held, and where each was heard recorded: a dead broker's devices
	// are called back at that endpoint.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var ready int
		err := sql.QueryRow(ctx, `SELECT count(*) FROM device_leases l JOIN devices d ON d.id = l.device_id
			WHERE l.expires_at > now() AND d.online AND d.broker_id = l.broker_id AND d.endpoint IS NOT NULL`).Scan(&ready)
		if err == nil && ready == n && fleet.connected() == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("after %s: %d of %d connected, %d held with their endpoint recorded (%v)", time.Since(start).Round(time.Second), fleet.connected(), n, ready, err)
		}
		time.Sleep(time.Second)
	}
	held := leaseHolders(b, sql)
	b.Logf("%d devices connected and held in %s: %s", n, time.Since(start).Round(100*time.Millisecond), spreadOf(held))
	// Settled: the first renewals and presence passes are behind us.
	time.Sleep(ttl)

	for b.Loop() {
		t0 := time.Now()
		kill := failover(b, sql, procs["broker-b"], "broker-b", syscall.SIGKILL, 3*time.Minute)
		b.Logf("kill  (SIGKILL broker-b, lease TTL %s, %d CPUs): %s; claimed %s",
			ttl, runtime.NumCPU(), kill, logged(procs, t0, `msg="broker gone without a clean stop`))
		kill.report(b, "kill")
		t0 = time.Now()
		stop := failover(b, sql, procs["broker-c"], "broker-c", syscall.SIGTERM, 3*time.Minute)
		b.Logf("stop  (SIGTERM broker-c, a rolling restart's step): %s; handed off %s",
			stop, logged(procs, t0, `msg="stopped cleanly: devices handed`))
		stop.report(b, "stop")
	}
	b.ReportMetric(ttl.Seconds(), "lease-ttl-s")
	b.ReportMetric(0, "ns/op")
	// Held is not yet connected for a few: wait for the last.
	settle := time.Now()
	for fleet.connected() != n && time.Since(settle) < time.Minute {
		time.Sleep(time.Second)
	}
	if c := fleet.connected(); c != n {
		b.Errorf("%d of %d devices connected a minute after both failovers", c, n)
	}
}

// failoverResult is one broker's devices going elsewhere.
type failoverResult struct {
	took []time.Duration // per device, sorted
	lost int             // not held again within the timeout
	to   map[string]int  // where they went
	// seen: devices whose assignment (a callback row) was read before
	// they were back (a row goes when its device's lease is taken, often
	// within one 100 ms read); assigned: of those, went to that broker.
	seen, assigned int
}

func (r failoverResult) String() string {
	if len(r.took) == 0 {
		return fmt.Sprintf("no device held again (%d lost)", r.lost)
	}
	return fmt.Sprintf("%d devices held again: p50 %s, p90 %s, p99 %s, max %s; %d not within the timeout; went to %s; of %d whose assignment was read, %d went to the broker assigned",
		len(r.took), percentile(r.took, 50).Round(10*time.Millisecond), percentile(r.took, 90).Round(10*time.Millisecond),
		percentile(r.took, 99).Round(10*time.Millisecond), r.took[len(r.took)-1].Round(10*time.Millisecond), r.lost, spreadOf2(r.to), r.seen, r.assigned)
}

func (r failoverResult) report(b *testing.B, name string) {
	if len(r.took) == 0 {
		return
	}
	b.ReportMetric(percentile(r.took, 50).Seconds(), name+"-p50-s")
	b.ReportMetric(percentile(r.took, 90).Seconds(), name+"-p90-s")
	b.ReportMetric(percentile(r.took, 99).Seconds(), name+"-p99-s")
	b.ReportMetric(r.took[len(r.took)-1].Seconds(), name+"-max-s")
}

// failover signals the broker id and measures, reading the leases every
// 100 ms, when each device it held is held by another.
func failover(b *testing.B, sql *pgx.Conn, p *brokerProcess, id string, sig syscall.Signal, timeout time.Duration) failoverResult {
	b.Helper()
	ctx := context.Background()
	var mine []string
	for dev, h := range leaseHolders(b, sql) {
		if h == id {
			mine = append(mine, dev)
		}
	}
	t0 := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		b.Fatal(err)
	}
	back := map[string]time.Duration{}
	to := map[string]string{}
	assignedTo := map[string]string{}
	for len(back) < len(mine) && time.Since(t0) < timeout {
		time.Sleep(100 * time.Millisecond)
		now := time.Since(t0)
		rows, err := sql.Query(ctx, `SELECT device_id::text, broker_id FROM device_callbacks`)
		if err != nil {
			b.Fatal(err)
		}
		for rows.Next() {
			var dev, br string
			if err := rows.Scan(&dev, &br); err != nil {
				b.Fatal(err)
			}
			assignedTo[dev] = br
		}
		rows.Close()
		hs := leaseHolders(b, sql)
		for _, dev := range mine {
			if _, ok := back[dev]; ok {
				continue
			}
			if h := hs[dev]; h != "" && h != id {
				back[dev], to[dev] = now, h
			}
		}
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		b.Errorf("%s still running 30 s after %s", id, sig)
	}
	r := failoverResult{lost: len(mine) - len(back), to: map[string]int{}}
	for dev, d := range back {
		r.took = append(r.took, d)
		r.to[to[dev]]++
		if a, ok := assignedTo[dev]; ok {
			r.seen++
			if a == to[dev] {
				r.assigned++
			}
		}
	}
	slices.Sort(r.took)
	return r
}

// logged says when, after t0, which broker logged a line containing msg.
func logged(procs map[string]*brokerProcess, t0 time.Time, msg string) string {
	var out []string
	for id, p := range procs {
		b, _ := os.ReadFile(p.log)
		for _, l := range strings.Split(string(b), "\n") {
			ts, ok := strings.CutPrefix(l, "time=")
			if !ok || !strings.Contains(l, msg) {
				continue
			}
			ts, _, _ = strings.Cut(ts, " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || at.Before(t0) {
				continue
			}
			out = append(out, fmt.Sprintf("by %s %s after the signal", id, at.Sub(t0).Round(10*time.Millisecond)))
		}
	}
	if len(out) == 0 {
		return "(not logged)"
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// leaseHolders maps each device with a live lease to its holder.
func leaseHolders(b *testing.B, sql *pgx.Conn) map[string]string {
	b.Helper()
	rows, err := sql.Query(context.Background(), `SELECT device_id::text, broker_id FROM device_leases WHERE expires_at > now()`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var dev, br string
		if err := rows.Scan(&dev, &br); err != nil {
			b.Fatal(err)
		}
		out[dev] = br
	}
	return out
}

func spreadOf(held map[string]string) string {
	n := map[string]int{}
	for _, h := range held {
		n[h]++
	}
	return spreadOf2(n)
}

func spreadOf2(n map[string]int) string {
	var parts []string
	for br, k := range n {
		parts = append(parts, fmt.Sprintf("%s %d", br, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
