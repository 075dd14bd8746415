//go:build linux

package e2e_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/wgnet/wgtest"
)

// Bulk services a cellular test device runs besides echo, on its loopback:
// discard takes a stream (the sink of an upload), chargen sends one (the
// source of a download). Both speak patternSeed's byte stream.
const (
	deviceDiscardPort = 9
	deviceChargenPort = 19
)

// patternSeed seeds the ChaCha8 stream every bulk transfer carries, so the
// receiving end checks each byte.
var patternSeed = [32]byte([]byte("fieldpass cellular bulk pattern!"))

// bulkTimeout bounds a bulk transfer: a correctness bound, far above what
// the slowest condition takes.
const bulkTimeout = 60 * time.Second

// cellularSetup is the field network of fieldSetup, with a delay relay on
// the device's path to the broker, and echo, discard and chargen services
// on the device (no sshd: these tests need none).
type cellularSetup struct {
	f         *fieldNet
	b         *broker
	d         *fieldDevice
	relay     *wgtest.Relay
	connector *proc
	stateDir  string
	admin     person
	engineer  person
	uploads   chan xferResult // what discard received, one per connection
}

func newCellularSetup(t *testing.T) *cellularSetup {
	t.Helper()
	f := newFieldNet(t)
	s := &cellularSetup{f: f, uploads: make(chan xferResult, 4)}
	s.b = f.startBroker()
	// The relay takes the device's WireGuard traffic where it enters the
	// internet from the carrier; it must be there before the first packet.
	s.relay = installDelayRelay(t, f.inet, "car", 51820, s.b.wgAddr)
	s.d = f.addDevice("pump-7")
	s.d.serveEcho(deviceEchoPort)
	s.serveDiscard(t)
	s.serveChargen(t)
	s.stateDir = s.d.enroll()
	s.startConnector()
	s.b.waitDevice("pump-7", 30*time.Second, "online", isOnlineWithEndpoint)
	if c := s.relay.Counters(); c.Up == 0 || c.Down == 0 {
		t.Fatalf("the device is online but the relay carried %d packets up and %d down: it is not on the path", c.Up, c.Down)
	}
	s.admin = f.person("admin@example.com", fieldpass.RoleAdmin)
	s.engineer = f.person("eng@example.com", fieldpass.RoleEngineer)
	s.admin.mustRun(t, "grant", "create", "--user", "eng@example.com", "--device", "pump-7",
		"--service", "echo", "--service", "discard", "--service", "chargen",
		"--duration", "2h", "--reason", "cellular tests", "--json")
	return s
}

// startConnector starts the device's connector; it logs "connected to
// broker" when its tunnel session is up.
func (s *cellularSetup) startConnector() {
	s.connector = s.d.startConnector(s.stateDir,
		"--service", "echo=127.0.0.1:7",
		"--service", "discard=127.0.0.1:9",
		"--service", "chargen=127.0.0.1:19")
}

// serveDiscard is the sink of uploads: on each connection it reads a
// length (8 bytes, big-endian), then that many bytes of the pattern, which
// it checks; it reports what it received on s.uploads and answers one byte.
func (s *cellularSetup) serveDiscard(t *testing.T) {
	ln := s.d.ns.listen(t, "tcp", fmt.Sprintf("127.0.0.1:%d", deviceDiscardPort))
	go serveConns(ln, func(c net.Conn) {
		var x xfer
		n, err := readLength(c)
		if err == nil {
			x, err = receivePattern(c, n)
		}
		if err == nil {
			_, err = c.Write([]byte{'k'})
		}
		s.uploads <- xferResult{x, err}
	})
}

// serveChargen is the source of downloads: on each connection it reads a
// length, sends that many bytes of the pattern and closes.
func (s *cellularSetup) serveChargen(t *testing.T) {
	ln := s.d.ns.listen(t, "tcp", fmt.Sprintf("127.0.0.1:%d", deviceChargenPort))
	go serveConns(ln, func(c net.Conn) {
		if n, err := readLength(c); err == nil {
			sendPattern(c, n)
		}
	})
}

func readLength(c net.Conn) (int64, error) {
	c.SetReadDeadline(time.Now().Add(bulkTimeout))
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, fmt.Errorf("read the length: %w", err)
	}
	return int64(binary.BigEndian.Uint64(b[:])), nil
}

func writeLength(c net.Conn, n int64) error {
	_, err := c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	return err
}

// xfer is a bulk transfer: the bytes the receiver got, when its last byte
// arrived, and (set by the side that started it) how long it took from the
// first byte sent, so that a transfer smaller than the path's window still
// counts the trip across the path.
type xfer struct {
	bytes int64
	last  time.Time
	took  time.Duration
}

type xferResult struct {
	xfer
	err error
}

func (x xfer) rate() string {
	if x.took <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f MiB/s", float64(x.bytes)/(1<<20)/x.took.Seconds())
}

func (x xfer) String() string {
	return fmt.Sprintf("%.2g MiB in %s", float64(x.bytes)/(1<<20), x.took.Round(10*time.Millisecond))
}

// sendPattern writes n bytes of the pattern stream to w.
func sendPattern(w io.Writer, n int64) error {
	_, err := io.CopyN(w, rand.NewChaCha8(patternSeed), n)
	return err
}

// receivePattern reads n bytes of the pattern stream from c within
// bulkTimeout, checking every byte.
func receivePattern(c net.Conn, n int64) (xfer, error) {
	want := rand.NewChaCha8(patternSeed)
	buf, exp := make([]byte, 64<<10), make([]byte, 64<<10)
	var x xfer
	c.SetReadDeadline(time.Now().Add(bulkTimeout))
	for x.bytes < n {
		k, err := c.Read(buf[:min(int64(len(buf)), n-x.bytes)])
		if k > 0 {
			want.Read(exp[:k])
			if !bytes.Equal(buf[:k], exp[:k]) {
				return x, fmt.Errorf("the stream differs from what was sent within bytes %d to %d", x.bytes, x.bytes+int64(k))
			}
			x.bytes += int64(k)
			x.last = time.Now()
		}
		if err != nil {
			return x, fmt.Errorf("after %d of %d bytes: %w", x.bytes, n, err)
		}
	}
	return x, nil
}

// upload sends n bytes to discard through the forward at addr and returns
// what the device received.
func (s *cellularSetup) upload(t *testing.T, addr string, n int64) xfer {
	t.Helper()
	c, err := s.f.eng.dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("upload: dial the forward at %s: %v", addr, err)
	}
	defer c.Close()
	sent := make(chan error, 1)
	start := time.Now()
	go func() {
		err := writeLength(c, n)
		if err == nil {
			err = sendPattern(c, n)
		}
		sent <- err
	}()
	var r xferResult
	select {
	case r = <-s.uploads:
	case <-time.After(bulkTimeout + 5*time.Second):
		t.Fatalf("upload: the device's discard service reported nothing in %s", bulkTimeout)
	}
	if r.err != nil {
		t.Fatalf("upload: the device's discard service: %v (sending: %v)", r.err, <-sent)
	}
	if err := <-sent; err != nil {
		t.Fatalf("upload: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(bulkTimeout))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("upload: no answer from the device's discard service: %v", err)
	}
	r.took = r.last.Sub(start)
	return r.xfer
}

// download reads n bytes from chargen through the forward at addr.
func (s *cellularSetup) download(t *testing.T, addr string, n int64) xfer {
	t.Helper()
	c, err := s.f.eng.dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("download: dial the forward at %s: %v", addr, err)
	}
	defer c.Close()
	start := time.Now()
	if err := writeLength(c, n); err != nil {
		t.Fatalf("download: %v", err)
	}
	x, err := receivePattern(c, n)
	if err != nil {
		t.Fatalf("download from the device's chargen service: %v", err)
	}
	x.took = x.last.Sub(start)
	return x
}

// echoOnce opens a connection to the forward at addr, which opens a new
// stream to the device's echo service, and returns how long one byte took
// to come back, from the dial.
func (s *cellularSetup) echoOnce(addr string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	c, err := s.f.eng.dial(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return 0, err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return 0, fmt.Errorf("echo: %w", err)
	}
	if b[0] != 'x' {
		return 0, fmt.Errorf("echo: got %q, want %q", b, "x")
	}
	return time.Since(start), nil
}

// newSession runs `fieldpass proxy pump-7 echo` as the engineer and
// returns the time from starting it to the first echoed byte on its
// stdout: login check, session row, stream open and one round trip.
func (s *cellularSetup) newSession(t *testing.T) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", s.engineer.ns.argv(bins.cli, "proxy", "pump-7", "echo")...)
	cmd.Env = s.engineer.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte{'y'})
	b := make([]byte, 1)
	_, rerr := io.ReadFull(stdout, b)
	took := time.Since(start)
	stdin.Close() // the proxy half-closes, echo closes, the proxy exits
	werr := cmd.Wait()
	switch {
	case rerr != nil:
		return 0, fmt.Errorf("fieldpass proxy pump-7 echo: no echo: %v (exit: %v, stderr %q)", rerr, werr, stderr.String())
	case b[0] != 'y':
		return 0, fmt.Errorf("fieldpass proxy pump-7 echo: echoed %q, want %q", b, "y")
	case werr != nil:
		return 0, fmt.Errorf("fieldpass proxy pump-7 echo: %v, stderr %q", werr, stderr.String())
	}
	return took, nil
}

// lossRules is the carrier's loss rule with a counter, and a counter of
// everything the carrier forwards in front of it.
func lossRules(percent int) []string {
	return []string{"counter", strings.Replace(fmt.Sprintf(lossRule, percent), " drop", " counter drop", 1)}
}

var nftCounterRE = regexp.MustCompile(`counter packets (\d+) bytes \d+`)

// lossCounts reads the counters of lossRules: packets seen and dropped.
func (s *cellularSetup) lossCounts(t *testing.T) (seen, dropped int64) {
	t.Helper()
	out := s.f.carrier.exec(t, "nft", "list", "chain", "ip", "carrier", "conditions")
	m := nftCounterRE.FindAllStringSubmatch(out, -1)
	if len(m) != 2 {
		t.Fatalf("carrier conditions: want 2 counters, got:\n%s", out)
	}
	seen, _ = strconv.ParseInt(m[0][1], 10, 64)
	dropped, _ = strconv.ParseInt(m[1][1], 10, 64)
	return seen, dropped
}

func millis(d time.Duration) string {
	return strconv.FormatInt(d.Round(time.Millisecond).Milliseconds(), 10)
}

// cellularFigures is what one condition measured.
type cellularFigures struct {
	name            string
	delay, jitter   time.Duration // each way
	loss            int           // percent, each way
	bulk            int64         // bytes each way
	up, down        xfer
	opens, sessions []time.Duration
	seen, dropped   int64 // carrier packets, under loss
}

// TestFieldCellular runs a session over a cellular-like path and measures
// it: bulk throughput both ways, the time a new connection through a
// running forward takes to echo a byte, and the time a new session does,
// on a clean path, with a long jittery delay, with loss, and with both.
// Then, during a 5 s blackout of the carrier, bytes written into an open
// session arrive once it ends, on the same session, and the broker never
// takes the device for offline. Last, the connector restarts under the
// delay, so that the tunnel's own TCP connection begins on the long path,
// and throughput is measured again.
//
// There is no netem here: the delay is a relay of the test's own on the
// device's WireGuard path (wgtest.Relay, in the internet namespace), loss
// and the blackout are nft drops in the carrier. Timings are logged, not
// asserted, except that a delayed path cannot be faster than its delay.
func TestFieldCellular(t *testing.T) {
	t.Parallel()
	began := time.Now()
	s := newCellularSetup(t)
	dev, _ := s.b.device("pump-7")
	t.Logf("setup %s; the broker sees the device at %s (the relay's upstream socket)", time.Since(began).Round(time.Millisecond), dev.Presence.Endpoint)

	echoAddr, _ := s.engineer.forward(t, "pump-7", "echo")
	discardAddr, _ := s.engineer.forward(t, "pump-7", "discard")
	chargenAddr, _ := s.engineer.forward(t, "pump-7", "chargen")
	forwardSession := map[string]string{} // service → the id of its forward's session
	for _, ss := range s.admin.sessions(t) {
		if ss.Open() {
			if id, dup := forwardSession[ss.Service]; dup {
				t.Fatalf("two open %s sessions (%s, %s): want one per forward", ss.Service, id, ss.ID)
			}
			forwardSession[ss.Service] = ss.ID
		}
	}
	if len(forwardSession) != 3 {
		t.Fatalf("open sessions by service: %v: want one for each of the three forwards", forwardSession)
	}

	// A 300 ms round trip, as `netem delay 300ms 50ms` on one side is
	// usually read: here half of it each way, 150 ms ± 25 ms, so that both
	// directions see a cellular uplink's and downlink's share of it.
	// Without reordering, a busy flow queues behind its slowest packet and
	// sees nearer 175 ms each way; a lone packet sees 125 to 175 ms.
	const delay, jitter = 150 * time.Millisecond, 25 * time.Millisecond
	// Transfer sizes keep each transfer to a few seconds: with 2 % loss on
	// a 300 ms path, TCP's loss-limited rate (Reno: about MSS/RTT x
	// 1.2/sqrt(loss)) is some 0.04 MiB/s. The tunnel's TCP connection was
	// set up on the clean path; the latency* row below is one set up on the
	// long path, for comparison (wgnet's minimum RTO keeps the first from
	// collapsing when its path grows: BenchmarkPathChange).
	conditions := []cellularFigures{
		{name: "clean", bulk: 8 << 20},
		{name: "latency", delay: delay, jitter: jitter, bulk: 8 << 20},
		{name: "loss", loss: 2, bulk: 4 << 20},
		{name: "latency+loss", delay: delay, jitter: jitter, loss: 2, bulk: 256 << 10},
	}
	const opens, sessions = 12, 3
	for i := range conditions {
		c := &conditions[i]
		s.relay.SetDelay(c.delay, c.jitter)
		if c.loss > 0 {
			s.f.conditions(t, lossRules(c.loss)...)
		} else {
			s.f.conditions(t)
		}
		phase := time.Now()
		for range opens {
			d, err := s.echoOnce(echoAddr)
			if err != nil {
				t.Fatalf("%s: a new connection through the echo forward: %v", c.name, err)
			}
			c.opens = append(c.opens, d)
		}
		for range sessions {
			d, err := s.newSession(t)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			c.sessions = append(c.sessions, d)
		}
		// The bulk transfers last: all of the device's streams share one
		// TCP connection, and a transfer still draining would delay the
		// opens. Each transfer ends only when its last byte has arrived.
		step := time.Now()
		c.up = s.upload(t, discardAddr, c.bulk)
		t.Logf("%s: upload %s (%s)", c.name, c.up, time.Since(step).Round(time.Millisecond))
		step = time.Now()
		c.down = s.download(t, chargenAddr, c.bulk)
		t.Logf("%s: download %s (%s)", c.name, c.down, time.Since(step).Round(time.Millisecond))
		if c.loss > 0 {
			c.seen, c.dropped = s.lossCounts(t)
		}
		t.Logf("%s: measured in %s", c.name, time.Since(phase).Round(time.Millisecond))
		// A byte echoed through the device crossed the delayed path both
		// ways at least once.
		if floor := 2 * (c.delay - c.jitter); slices.Min(c.opens) < floor {
			t.Errorf("%s: a connection echoed in %s: want at least %s, the delay of the path", c.name, slices.Min(c.opens), floor)
		}
	}
	s.relay.SetDelay(0, 0)
	s.f.conditions(t)

	// The blackout, on a clean path: a connection of the echo forward's
	// session carries a byte, then the carrier drops everything for 5 s,
	// during which the engineer writes more.
	const blackout = 5 * time.Second
	c, err := s.f.eng.dial(context.Background(), "tcp", echoAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	b := make([]byte, 1)
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("echo before the blackout: %v", err)
	}
	connects := strings.Count(s.connector.log(), "connected to broker")
	s.f.conditions(t, blackoutRule)
	blackStart := time.Now()
	time.Sleep(time.Second)
	payload := make([]byte, 16<<10)
	rand.NewChaCha8([32]byte{1}).Read(payload)
	if _, err := c.Write(payload); err != nil {
		t.Fatalf("write during the blackout: %v", err)
	}
	c.SetReadDeadline(blackStart.Add(blackout))
	if n, err := c.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read during the blackout: %d bytes, %v: want nothing (is the blackout on?)", n, err)
	}
	s.f.conditions(t)
	blackEnd := time.Now()
	c.SetReadDeadline(blackEnd.Add(60 * time.Second))
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got[:1]); err != nil {
		t.Fatalf("the echo of what was written during the blackout: %v", err)
	}
	stallFirst := time.Since(blackEnd)
	if _, err := io.ReadFull(c, got[1:]); err != nil {
		t.Fatalf("the echo of what was written during the blackout: %v", err)
	}
	stallAll := time.Since(blackEnd)
	if !bytes.Equal(got, payload) {
		t.Fatalf("the %d bytes written during the blackout came back different", len(payload))
	}
	afterOpen, err := s.newSession(t)
	if err != nil {
		t.Fatalf("a new session right after the blackout: %v", err)
	}
	if d, ok := s.b.device("pump-7"); !ok || !d.Presence.Online {
		t.Errorf("after a 5 s blackout the broker lists pump-7 as %+v: want online", d.Presence)
	}
	if n := strings.Count(s.connector.log(), "connected to broker"); n != connects {
		t.Errorf("the connector connected to the broker %d times during the blackout: want its tunnel to ride it out", n-connects)
	}
	var sinceBlackout int
	for _, ss := range s.admin.sessions(t) {
		if id, ok := forwardSession[ss.Service]; ok && id == ss.ID && !ss.Open() {
			t.Errorf("the %s forward's session %s ended (%s) during the conditions or the blackout: want it open", ss.Service, ss.ID, ss.EndReason)
		}
		if !ss.Start.Before(blackStart) {
			sinceBlackout++
		}
	}
	if sinceBlackout != 1 {
		t.Errorf("%d sessions started since the blackout: want 1, the new one after it (the open connection rode on its session)", sinceBlackout)
	}

	// The long path again, with the tunnel's TCP connection set up on it:
	// the connector restarts while the delay is on. Its sessions end with
	// the old connection, so this comes last, with forwards of its own.
	if err := s.connector.signal(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	s.relay.SetDelay(delay, jitter)
	s.startConnector()
	s.connector.waitLog(t, 30*time.Second, regexp.MustCompile(`connected to broker`))
	s.b.waitDevice("pump-7", 30*time.Second, "online again", isOnline)
	discardAddr, _ = s.engineer.forward(t, "pump-7", "discard")
	chargenAddr, _ = s.engineer.forward(t, "pump-7", "chargen")
	fresh := cellularFigures{name: "latency, tunnel set up on it", delay: delay, jitter: jitter, bulk: 8 << 20}
	fresh.up = s.upload(t, discardAddr, fresh.bulk)
	fresh.down = s.download(t, chargenAddr, fresh.bulk)
	t.Logf("%s: upload %s, download %s", fresh.name, fresh.up, fresh.down)
	s.relay.SetDelay(0, 0)

	var tab strings.Builder
	fmt.Fprintf(&tab, "cellular conditions, pump-7 through the carrier (delay: relay each way; loss: carrier nft, each way); throughput: from the request to the last byte received (so a download includes the path's round trip, an upload one way)\n")
	fmt.Fprintf(&tab, "%-13s %-14s %-5s %-12s %-12s %-22s %-22s %s\n", "condition", "delay/way", "loss", "upload", "download", "fwd open p50/p90 ms", "new session p50/max ms", "carrier drops")
	for _, c := range conditions {
		dl := "0"
		if c.delay > 0 {
			dl = fmt.Sprintf("%s±%s", c.delay, c.jitter)
		}
		drops := "-"
		if c.loss > 0 {
			drops = fmt.Sprintf("%d of %d pkts", c.dropped, c.seen)
		}
		fmt.Fprintf(&tab, "%-13s %-14s %-5s %-12s %-12s %-22s %-22s %s\n", c.name, dl, fmt.Sprintf("%d%%", c.loss),
			c.up.rate(), c.down.rate(),
			fmt.Sprintf("%s / %s (n=%d)", millis(quantile(c.opens, 0.5)), millis(quantile(c.opens, 0.9)), len(c.opens)),
			fmt.Sprintf("%s / %s (n=%d)", millis(quantile(c.sessions, 0.5)), millis(slices.Max(c.sessions)), len(c.sessions)),
			drops)
	}
	fmt.Fprintf(&tab, "%-13s %-14s %-5s %-12s %-12s (the connector restarted under the delay: its tunnel TCP connection began on the long path)\n",
		"latency*", fmt.Sprintf("%s±%s", fresh.delay, fresh.jitter), "0%", fresh.up.rate(), fresh.down.rate())
	fmt.Fprintf(&tab, "transfers in detail:")
	for _, c := range conditions {
		fmt.Fprintf(&tab, " %s up %s, down %s;", c.name, c.up, c.down)
	}
	fmt.Fprintf(&tab, " latency* up %s, down %s", fresh.up, fresh.down)
	fmt.Fprintf(&tab, "\nblackout %s (clean path otherwise): the echo of %d KiB written 1 s into it arrived %s ms (first byte) / %s ms (all) after it ended; same session, device online, a new session right after opened in %s ms\n",
		blackout, len(payload)>>10, millis(stallFirst), millis(stallAll), millis(afterOpen))
	fmt.Fprintf(&tab, "relay queue overflows: %d packets; UDP receive-buffer drops: %d in the internet (relay, broker), %d on the device; test wall time %s",
		s.relay.Counters().Overflowed, udpReceiveDrops(t, s.f.inet), udpReceiveDrops(t, s.d.ns), time.Since(began).Round(100*time.Millisecond))
	t.Logf("\n%s", tab.String())
}
