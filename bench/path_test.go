package bench_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
	"github.com/fieldpass/fieldpass/wgnet/wgtest"
)

// BenchmarkPath measures the path a person takes, with the real binaries in
// their own processes: `fieldpass forward` (the CLI) -> fieldpass-broker
// serve over HTTPS (a test CA the CLI trusts through FIELDPASS_CA_FILE) ->
// WireGuard -> fieldpass-connector -> a target service in this process;
// next to raw loopback TCP to the same target in the same run. It reports:
//
//   - one stream's throughput each way, FIELDPASS_BENCH_PATH_MIB (default
//     1024) per transfer, median of 3, and the CPU seconds each process
//     spent per GiB (utime+stime from /proc/PID/stat around the transfers);
//   - new connection + 1-byte echo + close, p50/p99 over
//     FIELDPASS_BENCH_PATH_CONNS (default 2000) sequential connections,
//     interleaved with the same on raw loopback;
//   - 200 new connections at once (each connect + 1-byte echo), the wall
//     time until all are done, median of 5;
//   - each process's RSS after the transfers.
//
// FIELDPASS_BENCH_BEFORE names a directory holding other builds of the
// three binaries (fieldpass-broker, fieldpass-connector, fieldpass), such
// as main's: the same measurements then run on them too, in the same run,
// for a before/after. Several builds: NAME=DIR,NAME=DIR. FIELDPASS_BENCH_CHISEL names a chisel binary, a
// peer measured the same way (chisel server and client on loopback, its
// client forwarding a local port to the target). FIELDPASS_BENCH_PERF
// names a directory: each process of each path is then recorded with
// `perf record -g` during the transfers and during the connection storm.
// FIELDPASS_BENCH_TUN=1 adds the same build with the broker in its kernel
// TUN mode (serve --tun), as "fieldpass-tun": the whole benchmark then runs
// again in a network namespace of its own (it needs root), every path in it,
// so that the interface never touches the host's.
//
// It takes about 3 minutes per build, so it runs only with FIELDPASS_BENCH
// set, as make bench does, with -benchtime 1x.
func BenchmarkPath(b *testing.B) {
	gate(b)
	tun := os.Getenv("FIELDPASS_BENCH_TUN") == "1"
	if tun && !wgtest.InNetns() {
		wgtest.RunInNetns(b, []string{"-test.run=^$", "-test.bench=^BenchmarkPath$", "-test.benchtime=1x", "-test.count=1", "-test.timeout=60m"})
		return
	}
	mib := envInt(b, "FIELDPASS_BENCH_PATH_MIB", 1024)
	conns := envInt(b, "FIELDPASS_BENCH_PATH_CONNS", 2000)
	dir := b.TempDir()
	target := pathTarget(b)

	paths := []*pathUnderTest{}
	if before := os.Getenv("FIELDPASS_BENCH_BEFORE"); before != "" {
		for _, build := range strings.Split(before, ",") {
			name, dir, ok := strings.Cut(build, "=")
			if !ok {
				name, dir = "before", build
			}
			paths = append(paths, startFieldpassPath(b, name, dir, target))
		}
	}
	bin := buildPathBinaries(b, filepath.Join(dir, "bin"))
	paths = append(paths, startFieldpassPath(b, "fieldpass", bin, target))
	if tun {
		paths = append(paths, startFieldpassPath(b, "fieldpass-tun", bin, target, "--tun", "fpbench0"))
	}
	if chisel := os.Getenv("FIELDPASS_BENCH_CHISEL"); chisel != "" {
		paths = append(paths, startChiselPath(b, chisel, target))
	}
	paths = append(paths, &pathUnderTest{name: "loopback", addr: target})
	perfDir := os.Getenv("FIELDPASS_BENCH_PERF")

	n := int64(mib) << 20
	for b.Loop() {
		for _, p := range paths {
			// Warm up: a first stream, a first transfer.
			if _, err := echoOnce(p.dial); err != nil {
				b.Fatalf("%s: echo: %v", p.name, err)
			}
			if err := p.transfer('u', 16<<20); err != nil {
				b.Fatalf("%s: warm-up: %v", p.name, err)
			}
		}
		for _, p := range paths {
			stop := p.perf(b, perfDir, "transfer")
			cpu0 := p.cpu(b)
			for range 3 {
				for _, dir := range []byte{'u', 'd'} {
					start := time.Now()
					if err := p.transfer(dir, n); err != nil {
						b.Fatalf("%s: %c: %v", p.name, dir, err)
					}
					p.mbps[dir] = append(p.mbps[dir], float64(n)/time.Since(start).Seconds()/1e6)
				}
			}
			p.transferCPU = diffCPU(cpu0, p.cpu(b))
			stop()
			p.rss = p.readRSS(b)
		}
		// Sequential opens, interleaved across the paths so the machine's
		// noise falls on all alike.
		stops := []func(){}
		for _, p := range paths {
			stops = append(stops, p.perf(b, perfDir, "storm"))
			p.stormCPU = p.cpu(b)
		}
		for range conns {
			for _, p := range paths {
				d, err := echoOnce(p.dial)
				if err != nil {
					b.Fatalf("%s: echo: %v", p.name, err)
				}
				p.open = append(p.open, d)
			}
		}
		for _, p := range paths {
			p.stormCPU = diffCPU(p.stormCPU, p.cpu(b))
		}
		for range 5 {
			for _, p := range paths {
				d, err := concurrentOpens(p.dial, 200)
				if err != nil {
					b.Fatalf("%s: 200 at once: %v", p.name, err)
				}
				p.burst = append(p.burst, d)
			}
		}
		for _, s := range stops {
			s()
		}
	}

	b.ReportMetric(0, "ns/op")
	gib := float64(6*n) / (1 << 30)
	b.Logf("the person's path, %d MiB per transfer, median of 3 each way; %d sequential new connections; 200 at once, median of 5 (%s)",
		mib, conns, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	for _, p := range paths {
		up, down := medianF(p.mbps['u']), medianF(p.mbps['d'])
		slices.Sort(p.open)
		p50, p99 := percentile(p.open, 50), percentile(p.open, 99)
		slices.Sort(p.burst)
		burst := p.burst[len(p.burst)/2]
		b.ReportMetric(up, p.name+"-up-MB/s")
		b.ReportMetric(down, p.name+"-down-MB/s")
		b.ReportMetric(micros(p50), p.name+"-open-p50-us")
		b.ReportMetric(micros(p99), p.name+"-open-p99-us")
		b.ReportMetric(float64(burst)/float64(time.Millisecond), p.name+"-200-ms")
		line := fmt.Sprintf("%-10s up %6.0f MB/s %v, down %6.0f MB/s %v; new conn + echo p50/p99 %.0f/%.0f µs; 200 at once %.1f ms",
			p.name, up, roundF(p.mbps['u']), down, roundF(p.mbps['d']), micros(p50), micros(p99), float64(burst)/float64(time.Millisecond))
		if len(p.procs) > 0 {
			var total time.Duration
			var parts []string
			for i, pr := range p.procs {
				total += p.transferCPU[i]
				parts = append(parts, fmt.Sprintf("%s %.2f s/GiB %.0f MB RSS, %.0f µs CPU/conn", pr.name,
					p.transferCPU[i].Seconds()/gib, float64(p.rss[i])/1024, micros(p.stormCPU[i])/float64(conns)))
			}
			b.ReportMetric(total.Seconds()/gib, p.name+"-CPU-s/GiB")
			line += fmt.Sprintf("\n           CPU %.2f s per GiB, all processes: %s", total.Seconds()/gib, strings.Join(parts, "; "))
		}
		b.Log(line)
	}
}

// pathUnderTest is one way to reach the target: a local address and the
// processes that carry it (none for raw loopback).
type pathUnderTest struct {
	name  string
	addr  string // where a client connects
	procs []pathProc

	mbps        map[byte][]float64
	transferCPU []time.Duration
	stormCPU    []time.Duration
	rss         []int64
	open        []time.Duration
	burst       []time.Duration
}

type pathProc struct {
	name string
	pid  int
}

func (p *pathUnderTest) dial() (tunnel.HalfCloser, error) { return dialTCP(p.addr) }

// transfer sends (dir 'u') or receives ('d') n bytes through the path on a
// new connection.
func (p *pathUnderTest) transfer(dir byte, n int64) error {
	if p.mbps == nil {
		p.mbps = map[byte][]float64{}
	}
	c, err := dialTCP(p.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	// The byte count goes first, so that neither end needs a half-close
	// (chisel passes none on).
	var hdr [9]byte
	hdr[0] = dir
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	buf := make([]byte, chunk)
	if dir == 'u' {
		for left := n; left > 0; {
			w, err := c.Write(buf[:min(left, int64(len(buf)))])
			if err != nil {
				return fmt.Errorf("write: %w", err)
			}
			left -= int64(w)
		}
		var got int64
		if err := binary.Read(c, binary.BigEndian, &got); err != nil {
			return fmt.Errorf("read count: %w", err)
		}
		if got != n {
			return fmt.Errorf("target got %d bytes, want %d", got, n)
		}
		return nil
	}
	if got, err := io.CopyBuffer(io.Discard, io.LimitReader(c, n), buf); err != nil || got != n {
		return fmt.Errorf("got %d bytes of %d: %v", got, n, err)
	}
	return nil
}

func (p *pathUnderTest) cpu(tb testing.TB) []time.Duration {
	tb.Helper()
	var out []time.Duration
	for _, pr := range p.procs {
		d, err := procCPU(pr.pid)
		if err != nil {
			tb.Fatalf("%s %s: %v", p.name, pr.name, err)
		}
		out = append(out, d)
	}
	return out
}

func (p *pathUnderTest) readRSS(tb testing.TB) []int64 {
	tb.Helper()
	var out []int64
	for _, pr := range p.procs {
		kib, err := procRSS(pr.pid)
		if err != nil {
			tb.Fatalf("%s %s: %v", p.name, pr.name, err)
		}
		out = append(out, kib)
	}
	return out
}

// perf records each of the path's processes with perf until the returned
// function is called; nothing without a directory.
func (p *pathUnderTest) perf(tb testing.TB, dir, phase string) func() {
	if dir == "" || len(p.procs) == 0 {
		return func() {}
	}
	var cmds []*exec.Cmd
	for _, pr := range p.procs {
		out := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.data", p.name, pr.name, phase))
		cmd := exec.Command("perf", "record", "-q", "-F", "499", "-g", "-p", fmt.Sprint(pr.pid), "-o", out)
		if err := cmd.Start(); err != nil {
			tb.Logf("perf: %v", err)
			continue
		}
		cmds = append(cmds, cmd)
	}
	return func() {
		for _, c := range cmds {
			c.Process.Signal(syscall.SIGINT)
			c.Wait()
		}
	}
}

func diffCPU(a, b []time.Duration) []time.Duration {
	out := make([]time.Duration, len(a))
	for i := range a {
		out[i] = b[i] - a[i]
	}
	return out
}

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func roundF(xs []float64) []int {
	var out []int
	for _, x := range xs {
		out = append(out, int(x+0.5))
	}
	return out
}

// concurrentOpens opens k connections at once, each sending one byte and
// reading it back, and returns the time until the last is answered.
func concurrentOpens(dial func() (tunnel.HalfCloser, error), k int) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make(chan error, k)
	start := time.Now()
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dial()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			one := []byte{'e'}
			if _, err := c.Write(one); err != nil {
				errs <- err
				return
			}
			if _, err := io.ReadFull(c, one); err != nil {
				errs <- fmt.Errorf("read echo: %w", err)
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	return d, <-errs
}

// pathTarget is the service at the end of every path. The first byte a
// client sends picks what it does:
//
//   - 'u' and an 8-byte count: an upload of that many bytes, answered with
//     the count received once all arrived;
//   - 'd' and an 8-byte count: a download of that many bytes;
//   - anything else: echo, that byte included, until EOF: a 1-byte echo is
//     the client's first byte coming back.
func pathTarget(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	src := make([]byte, chunk)
	rand.Read(src)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*net.TCPConn)
				var first [1]byte
				if _, err := io.ReadFull(tc, first[:]); err != nil {
					return
				}
				switch first[0] {
				case 'u', 'd':
					var n int64
					if err := binary.Read(tc, binary.BigEndian, &n); err != nil {
						return
					}
					if first[0] == 'u' {
						got, _ := io.CopyBuffer(io.Discard, io.LimitReader(tc, n), make([]byte, chunk))
						binary.Write(tc, binary.BigEndian, got)
						io.Copy(io.Discard, tc)
						return
					}
					for n > 0 {
						w, err := tc.Write(src[:min(n, int64(len(src)))])
						if err != nil {
							return
						}
						n -= int64(w)
					}
					io.Copy(io.Discard, tc)
				default:
					if _, err := tc.Write(first[:]); err != nil {
						return
					}
					io.Copy(tc, tc)
					tc.CloseWrite()
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// buildPathBinaries builds the three binaries of this tree into dir.
func buildPathBinaries(tb testing.TB, dir string) string {
	tb.Helper()
	cmd := exec.Command("go", "build", "-tags", "enroll_https", "-o", dir+string(filepath.Separator),
		"github.com/fieldpass/fieldpass/cmd/fieldpass-broker",
		"github.com/fieldpass/fieldpass/cmd/fieldpass-connector",
		"github.com/fieldpass/fieldpass/cmd/fieldpass")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// startFieldpassPath starts a broker (HTTPS with a test CA, its own
// database), enrols and starts a connector exposing target as "bench",
// makes a grant to an engineer and starts `fieldpass forward` as them.
// serveArgs are added to the broker's serve flags.
func startFieldpassPath(tb testing.TB, name, bin, target string, serveArgs ...string) *pathUnderTest {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	broker := filepath.Join(bin, "fieldpass-broker")
	connector := filepath.Join(bin, "fieldpass-connector")
	cli := filepath.Join(bin, "fieldpass")
	dbURL := pgtest.NewDatabase(tb)
	dbEnv := append(os.Environ(), "FIELDPASS_DATABASE_URL="+dbURL)
	mustRun(tb, dbEnv, broker, "migrate")

	caFile, certFile, keyFile := writeTestCA(tb, dir)
	key, err := wgnet.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	brokerKey := filepath.Join(dir, "broker.key")
	if err := os.WriteFile(brokerKey, []byte(key.String()+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(tb, "tcp"))
	url := "https://" + httpAddr
	br := startPathProc(tb, filepath.Join(dir, "broker.log"), dbEnv, broker, append([]string{"serve",
		"--http-listen", httpAddr, "--wg-listen", fmt.Sprintf("127.0.0.1:%d", freePort(tb, "udp")),
		"--public-url", url, "--key-file", brokerKey, "--broker-id", "bench-path",
		"--tls-cert", certFile, "--tls-key", keyFile,
		"--max-streams-per-session", "1024"}, serveArgs...)...) // 200 at once, while the last burst's streams may still be closing
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: caPool(tb, caFile)}, Timeout: 2 * time.Second}
	waitUntil(tb, 30*time.Second, name+" broker healthy", func() bool {
		resp, err := hc.Get(url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	const device = "bench-path"
	tok := strings.TrimSpace(mustRun(tb, dbEnv, broker, "token", "create", "--device", device))
	state := filepath.Join(dir, "state")
	mustRun(tb, os.Environ(), connector, "enroll", "--broker", url, "--token", tok, "--state-dir", state, "--ca-file", caFile)
	co := startPathProc(tb, filepath.Join(dir, "connector.log"), os.Environ(), connector, "run",
		"--state-dir", state, "--listen", "127.0.0.1:0", "--service", "bench="+target)

	admin := strings.TrimSpace(mustRun(tb, dbEnv, broker, "user", "token", "--email", "admin@bench.example", "--role", "admin", "--ttl", "2h"))
	eng := strings.TrimSpace(mustRun(tb, dbEnv, broker, "user", "token", "--email", "eng@bench.example", "--role", "engineer", "--ttl", "2h"))
	cliEnv := func(tok string) []string {
		return append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "FIELDPASS_BROKER="+url, "FIELDPASS_TOKEN="+tok, "FIELDPASS_CA_FILE="+caFile)
	}
	waitUntil(tb, 30*time.Second, name+" device online", func() bool {
		return strings.Contains(mustRun(tb, dbEnv, broker, "device", "list"), "online")
	})
	mustRun(tb, cliEnv(admin), cli, "grant", "create", "--user", "eng@bench.example", "--device", device,
		"--service", "bench", "--duration", "2h", "--reason", "benchmark")

	fwdLog := filepath.Join(dir, "forward.log")
	fwd := startPathProc(tb, fwdLog, cliEnv(eng), cli, "forward", device, "bench")
	var addr string
	waitUntil(tb, 30*time.Second, name+" forward listening", func() bool {
		f, err := os.Open(fwdLog)
		if err != nil {
			return false
		}
		defer f.Close()
		line, _ := bufio.NewReader(f).ReadString('\n')
		var rest string
		if _, err := fmt.Sscanf(line, "forwarding %s to %s", &addr, &rest); err != nil {
			return false
		}
		return true
	})
	return &pathUnderTest{name: name, addr: addr, procs: []pathProc{
		{"broker", br.Process.Pid}, {"connector", co.Process.Pid}, {"cli", fwd.Process.Pid},
	}}
}

// startChiselPath starts a chisel server and a client forwarding a local
// port to target through it, on loopback.
func startChiselPath(tb testing.TB, bin, target string) *pathUnderTest {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "chisel")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	srvAddr := fmt.Sprintf("127.0.0.1:%d", freePort(tb, "tcp"))
	local := fmt.Sprintf("127.0.0.1:%d", freePort(tb, "tcp"))
	host, port, _ := net.SplitHostPort(srvAddr)
	srv := startPathProc(tb, filepath.Join(dir, "server.log"), os.Environ(), bin, "server", "--host", host, "--port", port)
	waitUntil(tb, 10*time.Second, "chisel server", func() bool {
		c, err := net.Dial("tcp", srvAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	cl := startPathProc(tb, filepath.Join(dir, "client.log"), os.Environ(), bin, "client", "http://"+srvAddr, local+":"+target)
	waitUntil(tb, 10*time.Second, "chisel client connected", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "client.log"))
		return strings.Contains(string(b), "Connected")
	})
	return &pathUnderTest{name: "chisel", addr: local, procs: []pathProc{{"server", srv.Process.Pid}, {"client", cl.Process.Pid}}}
}

// startPathProc starts a long-running process logging to logPath; it is
// stopped (SIGTERM, then SIGKILL) when the benchmark ends.
func startPathProc(tb testing.TB, logPath string, env []string, bin string, args ...string) *exec.Cmd {
	tb.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if tb.Failed() {
			b, _ := os.ReadFile(logPath)
			tb.Logf("---- %s %s ----\n%s", filepath.Base(bin), logPath, tail(string(b), 40))
		}
	})
	return cmd
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// mustRun runs a command to completion and returns its stdout.
func mustRun(tb testing.TB, env []string, bin string, args ...string) string {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %s: %v\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func waitUntil(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeTestCA makes a certificate authority and a server certificate for
// 127.0.0.1 it issued, and returns the files: the CA's certificate, the
// server's certificate and key.
func writeTestCA(tb testing.TB, dir string) (caFile, certFile, keyFile string) {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fieldpass bench CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "broker.crt"), filepath.Join(dir, "broker.key.pem")
	for _, f := range []struct {
		path string
		typ  string
		der  []byte
	}{{caFile, "CERTIFICATE", caDER}, {certFile, "CERTIFICATE", der}, {keyFile, "EC PRIVATE KEY", kder}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// caPool is a TLS configuration trusting only the CA in caFile.
func caPool(tb testing.TB, caFile string) *tls.Config {
	tb.Helper()
	b, err := os.ReadFile(caFile)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		tb.Fatalf("no certificate in %s", caFile)
	}
	return &tls.Config{RootCAs: pool}
}
