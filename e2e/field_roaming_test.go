//go:build linux

package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/wgnet"
	"github.com/fieldpass/fieldpass/wgnet/wgtest"
)

// roamPinger sends a numbered line through a live connection to the
// device's echo service every interval and times each answer. Answers must
// come back whole and in order: a roam may delay the stream, never change
// it.
type roamPinger struct {
	c    net.Conn
	stop chan struct{}
	done chan struct{} // the writer has stopped

	mu     sync.Mutex
	sentAt []time.Time // by sequence number
	gotAt  []time.Time // by sequence number: answers arrive in order
	err    error       // the first thing that went wrong
}

func startRoamPinger(t *testing.T, c net.Conn, interval time.Duration) *roamPinger {
	p := &roamPinger{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { c.Close() })
	go func() {
		defer close(p.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for seq := 0; ; seq++ {
			p.mu.Lock()
			p.sentAt = append(p.sentAt, time.Now())
			p.mu.Unlock()
			if _, err := fmt.Fprintf(c, "ping %08d\n", seq); err != nil {
				p.fail(fmt.Errorf("write ping %d: %w", seq, err))
				return
			}
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	go func() {
		sc := bufio.NewScanner(c)
		for seq := 0; sc.Scan(); seq++ {
			now := time.Now()
			if want := fmt.Sprintf("ping %08d", seq); sc.Text() != want {
				p.fail(fmt.Errorf("answer %d: got %q, want %q", seq, sc.Text(), want))
				return
			}
			p.mu.Lock()
			p.gotAt = append(p.gotAt, now)
			p.mu.Unlock()
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.gotAt) < len(p.sentAt) && p.err == nil {
			p.err = fmt.Errorf("echo stream ended after %d of %d answers: %v", len(p.gotAt), len(p.sentAt), sc.Err())
		}
	}()
	return p
}

func (p *roamPinger) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

func (p *roamPinger) check(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		t.Fatalf("echo stream through the forward: %v", p.err)
	}
}

// answeredAfter waits until a ping sent after since has been answered and
// returns when that answer came.
func (p *roamPinger) answeredAfter(t *testing.T, since time.Time, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		err := p.err
		first := slices.IndexFunc(p.sentAt, func(s time.Time) bool { return s.After(since) })
		var at time.Time
		if first >= 0 && first < len(p.gotAt) {
			at = p.gotAt[first]
		}
		p.mu.Unlock()
		if err != nil {
			t.Fatalf("echo stream through the forward: %v", err)
		}
		if !at.IsZero() {
			return at
		}
		if time.Now().After(deadline) {
			t.Fatalf("no echo answer to a ping sent after %s for %s: the session did not carry on", since.Format("15:04:05.000"), timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// longestGap is the longest time without an answer within [from, to], and
// when it began.
func (p *roamPinger) longestGap(from, to time.Time) (gap time.Duration, began time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := from
	for _, at := range p.gotAt {
		if at.Before(from) {
			continue
		}
		if at.After(to) {
			at = to
		}
		if d := at.Sub(prev); d > gap {
			gap, began = d, prev
		}
		prev = at
		if !at.Before(to) {
			break
		}
	}
	if d := to.Sub(prev); d > gap {
		gap, began = d, prev
	}
	return gap, began
}

// finish stops sending, waits for every answer and returns how many pings
// went both ways.
func (p *roamPinger) finish(t *testing.T) int {
	t.Helper()
	close(p.stop)
	<-p.done
	deadline := time.Now().Add(30 * time.Second)
	for {
		p.mu.Lock()
		sent, got, err := len(p.sentAt), len(p.gotAt), p.err
		p.mu.Unlock()
		if err != nil {
			t.Fatalf("echo stream through the forward: %v", err)
		}
		if got == sent {
			return sent
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo stream: %d of %d pings answered 30s after the last was sent", got, sent)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var conntrackReplyPortRE = regexp.MustCompile(`dport=(\d+)`)

// natPorts are the carrier's public UDP ports mapped now for traffic from
// addr to the broker's WireGuard port.
func (f *fieldNet) natPorts(t testing.TB, addr netip.Addr) []string {
	t.Helper()
	out := mustRun(t, "ip", f.carrier.argv("conntrack", "-L", "-p", "udp", "-s", addr.String(), "-d", brokerPublicIP, "--dport", "51820")...)
	var ports []string
	for line := range strings.Lines(out) {
		// Original direction first, then the reply: its dport is the
		// public port the carrier chose.
		if m := conntrackReplyPortRE.FindAllStringSubmatch(line, -1); len(m) == 2 {
			ports = append(ports, m[1][1])
		}
	}
	return ports
}

// readDeviceHistory is `fieldpass-broker device history NAME --json`, oldest
// first.
func readDeviceHistory(t *testing.T, b *broker, name string) []fieldpass.DeviceEvent {
	t.Helper()
	out := b.mustCLI("device", "history", name, "--json")
	var evs []fieldpass.DeviceEvent
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatalf("device history --json: %v\n%s", err, out)
	}
	slices.Reverse(evs)
	return evs
}

func eventKinds(evs []fieldpass.DeviceEvent) string {
	ks := make([]string, len(evs))
	for i, e := range evs {
		ks[i] = string(e.Kind)
	}
	return strings.Join(ks, ",")
}

var logTimeRE = regexp.MustCompile(`(?m)^time=(\S+) .*msg="local network changed; rebinding"`)

// rebindAfter is when the connector logged its first rebind after since.
func rebindAfter(p *proc, since time.Time) (time.Time, bool) {
	for _, m := range logTimeRE.FindAllStringSubmatch(p.log(), -1) {
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err == nil && at.After(since) {
			return at, true
		}
	}
	return time.Time{}, false
}

// TestFieldRoaming: mid-session the device gets a new address on the APN
// and the carrier forgets its NAT mappings (its masquerade is fully random,
// so the public port changes too), three times. An echo stream through
// `fieldpass forward`, pinged every 50 ms, carries on in the same session
// with every byte in order; the longest time without an answer around each
// roam (the stall) is measured, not asserted. The broker sees the device at
// the carrier's new mapping, records endpoint_changed from each endpoint to
// the next, and never records the device offline.
func TestFieldRoaming(t *testing.T) {
	t.Parallel()
	testStart := time.Now()
	s := newFieldSetup(t)
	b, d := s.b, s.d
	const roams = 3

	local, _ := s.engineer.forward(t, "pump-7", "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := s.f.eng.dial(ctx, "tcp", local)
	if err != nil {
		t.Fatalf("dial the forward at %s: %v", local, err)
	}
	pinger := startRoamPinger(t, c, 50*time.Millisecond)
	pinger.answeredAfter(t, time.Now(), 20*time.Second)

	open := func() []fieldpass.Session {
		var o []fieldpass.Session
		for _, ss := range s.admin.sessions(t) {
			if ss.Open() {
				o = append(o, ss)
			}
		}
		return o
	}
	before := open()
	if len(before) != 1 || before[0].Device != "pump-7" || before[0].Service != "echo" {
		t.Fatalf("open sessions before roaming: %+v, want the one echo session of the forward", before)
	}

	dev, _ := b.device("pump-7")
	firstEndpoint := dev.Presence.Endpoint
	prevEndpoint := firstEndpoint
	var stalls []time.Duration
	for gen := 1; gen <= roams; gen++ {
		time.Sleep(time.Second) // a steady stream before each roam
		pinger.check(t)
		from := d.addr
		at := time.Now()
		to := d.roam(t, gen)
		answered := pinger.answeredAfter(t, at, 60*time.Second)
		rebind := "no rebind logged"
		if rb, ok := rebindAfter(s.connector, at); ok {
			rebind = fmt.Sprintf("connector rebound %s after the roam", roundMS(rb.Sub(at)))
		}
		// The broker reads endpoints on its presence tick (10 s).
		var ports []string
		dev, _ := b.waitDevice("pump-7", 30*time.Second, "seen at a new carrier mapping", func(dv fieldpass.Device) bool {
			if dv.Presence.Endpoint == prevEndpoint || !dv.Presence.Online {
				return false
			}
			ap, err := netip.ParseAddrPort(dv.Presence.Endpoint)
			ports = s.f.natPorts(t, to)
			return err == nil && ap.Addr().String() == carrierPublicIP && slices.Contains(ports, strconv.Itoa(int(ap.Port())))
		})
		// Measured once the second after the first answer has passed
		// (the broker wait above takes longer), so its pings are in.
		stall, began := pinger.longestGap(at.Add(-time.Second), answered.Add(time.Second))
		stalls = append(stalls, stall)
		t.Logf("roam %d: %s → %s; stall (longest gap without an echo answer) %s from %s; first ping sent after the roam answered %s after it; %s; broker sees %s → %s (carrier mappings of %s: %v) %s after the roam",
			gen, from, to, roundMS(stall), began.Format("15:04:05.000"), roundMS(answered.Sub(at)), rebind,
			prevEndpoint, dev.Presence.Endpoint, to, ports, time.Since(at).Round(100*time.Millisecond))
		prevEndpoint = dev.Presence.Endpoint
	}
	pings := pinger.finish(t)

	after := open()
	if len(after) != 1 || after[0].ID != before[0].ID {
		t.Errorf("open sessions after %d roams: %+v, want the same one as before (%s)", roams, after, before[0].ID)
	}
	if all := s.admin.sessions(t); len(all) != 1 {
		t.Errorf("sessions after roaming: %d rows, want 1 (no new session): %+v", len(all), all)
	}

	// History: the chain of endpoints, written off the broker's hot path.
	var evs []fieldpass.DeviceEvent
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs = readDeviceHistory(t, b, "pump-7")
		var last fieldpass.DeviceEvent
		for _, e := range evs {
			if e.Kind == fieldpass.DeviceEndpointChanged {
				last = e
			}
		}
		if last.Endpoint == prevEndpoint || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var changes []fieldpass.DeviceEvent
	for _, e := range evs {
		switch e.Kind {
		case fieldpass.DeviceEndpointChanged:
			changes = append(changes, e)
		case fieldpass.DeviceOffline, fieldpass.DeviceCloneSuspected:
			t.Errorf("history has %s while roaming: %+v (all: %s)", e.Kind, e, eventKinds(evs))
		}
	}
	if len(changes) < roams {
		t.Fatalf("history: %d endpoint_changed, want at least %d (one per roam); history %s", len(changes), roams, eventKinds(evs))
	}
	prev := firstEndpoint
	for i, e := range changes {
		if e.PreviousEndpoint != prev || !strings.HasPrefix(e.Endpoint, carrierPublicIP+":") || e.Endpoint == prev {
			t.Errorf("endpoint_changed %d: %s → %s, want from %s to a new port of %s", i+1, e.PreviousEndpoint, e.Endpoint, prev, carrierPublicIP)
		}
		prev = e.Endpoint
	}
	if prev != prevEndpoint {
		t.Errorf("last endpoint_changed is to %s, but the broker's presence says %s", prev, prevEndpoint)
	}
	t.Logf("%d pings (every 50 ms) echoed whole and in order through %d roams in one session; stalls %v; %d endpoint_changed recorded; history %s; test wall time %s",
		pings, roams, stalls, len(changes), eventKinds(evs), time.Since(testStart).Round(100*time.Millisecond))
}

// TestFieldClockBackwards: a device reboots with its clock behind (no RTC)
// after a handshake dated a year ahead had been accepted from its key, sent
// from the device's network across the carrier NAT like the real one.
// WireGuard refuses the connector's handshakes as replays, so it stays
// offline: the lock-out is reproduced, or the test proves nothing. The
// broker, started with --handshake-reset-after 15s, forgets the peer's
// handshake state once it has been silent that long, and the device is back;
// its history says offline → handshake_reset → online. The recovery time is
// logged.
func TestFieldClockBackwards(t *testing.T) {
	t.Parallel()
	testStart := time.Now()
	f := newFieldNet(t)
	// 15s, not a multiple of the broker's 10 s presence tick: silence is
	// judged on the tick, and a threshold equal to two ticks would be
	// crossed on the second or the third by a few milliseconds either way.
	b := f.startBroker("--handshake-reset-after", "15s")
	d := f.addDevice("meter-5")
	d.serveEcho(deviceEchoPort)
	stateDir := d.enroll()
	args := []string{"--keepalive", "2s", "--service", "echo=127.0.0.1:7"}
	c := d.startConnector(stateDir, args...)
	b.waitDevice("meter-5", 30*time.Second, "online", isOnlineWithEndpoint)

	// The reboot: the connector dies; the broker notices the silence.
	c.kill()
	_, took := b.waitDevice("meter-5", 60*time.Second, "offline", isOffline)
	t.Logf("broker saw the device offline %s after the connector died", took.Round(100*time.Millisecond))

	st, err := connector.LoadState(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	brokerKey, err := wgnet.ParseKey(st.BrokerKey)
	if err != nil {
		t.Fatal(err)
	}
	uc := d.ns.listenUDP(t, "0.0.0.0:0")
	forgedAt := time.Now()
	if err := wgtest.SendInitiation(uc, netip.MustParseAddrPort(brokerPublicIP+":51820"), st.PrivateKey, brokerKey, time.Now().AddDate(1, 0, 0)); err != nil {
		t.Fatalf("handshake dated a year ahead, from the device's network: %v", err)
	}

	restarted := time.Now()
	c = d.startConnector(stateDir, args...)
	lockout := 5 * time.Second
	for time.Since(restarted) < lockout {
		if dv, _ := b.device("meter-5"); dv.Presence.Online {
			t.Fatalf("device online %s after restarting with its clock behind: the test did not reproduce the lock-out (presence %+v)",
				time.Since(restarted).Round(100*time.Millisecond), dv.Presence)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// And locked out for the reason under test: WireGuard at the broker
	// refused the connector's handshakes as older than the forged one.
	b.p.waitLog(t, 10*time.Second, regexp.MustCompile(`handshake replay`))
	b.waitDevice("meter-5", 120*time.Second, "back online after its clock went backwards", isOnline)
	back, backForged := time.Since(restarted), time.Since(forgedAt)

	// History: the last offline before the forged handshake, then the
	// reset, then the device online (endpoint_changed may follow: the
	// broker last saw the forged packet's port).
	var evs []fieldpass.DeviceEvent
	var seq []fieldpass.DeviceEvent
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs = readDeviceHistory(t, b, "meter-5")
		seq = seq[:0]
		for _, e := range evs {
			if e.Kind == fieldpass.DeviceEndpointChanged {
				continue
			}
			seq = append(seq, e)
		}
		if n := len(seq); n >= 3 && seq[n-1].Kind == fieldpass.DeviceOnline || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Before the forged handshake: online, offline (and, if the offline
	// tick also crossed the threshold, a first reset). After it: the reset
	// that let the device in, then online.
	var pre, post []string
	var reset fieldpass.DeviceEvent
	for _, e := range seq {
		if e.At.Before(forgedAt) {
			pre = append(pre, string(e.Kind))
			continue
		}
		post = append(post, string(e.Kind))
		if e.Kind == fieldpass.DeviceHandshakeReset {
			reset = e
		}
	}
	if len(pre) < 2 || pre[len(pre)-1] != "offline" && !(pre[len(pre)-1] == "handshake_reset" && pre[len(pre)-2] == "offline") {
		t.Errorf("history before the forged handshake: %v, want it to end offline (history %s)", pre, eventKinds(evs))
	}
	if i, j := slices.Index(pre, "handshake_reset"), slices.Index(pre, "offline"); i >= 0 && i < j {
		t.Errorf("history before the forged handshake: %v: a handshake_reset before the offline it belongs after", pre)
	}
	if strings.Join(post, ",") != "handshake_reset,online" {
		t.Errorf("history after the forged handshake: %v, want handshake_reset, online (history %s)", post, eventKinds(evs))
	}
	if secs, _ := reset.Details["silent_for_seconds"].(float64); secs < 15 || reset.Details["reset_after"] != "15s" {
		t.Errorf("handshake_reset details %v: want silent_for_seconds ≥ 15 and reset_after 15s", reset.Details)
	}
	t.Logf("locked out as expected for the first %s; back online %s after the connector restarted with its clock behind (%s after the forged handshake; reset %s after it, silent_for %v); history %s; test wall time %s",
		lockout, back.Round(100*time.Millisecond), backForged.Round(100*time.Millisecond),
		reset.At.Sub(forgedAt).Round(100*time.Millisecond), reset.Details["silent_for"], eventKinds(evs), time.Since(testStart).Round(100*time.Millisecond))
}

// roundMS rounds d to milliseconds for the figures a test logs.
func roundMS(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
