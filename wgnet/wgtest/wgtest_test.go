package wgtest_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/fieldpass/fieldpass/wgnet/wgtest"
)

// logBuf collects a device's log lines (race-safe; outlives the test, unlike t.Logf).
type logBuf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuf) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logBuf) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, substr) {
			n++
		}
	}
	return n
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type node struct {
	dev        *device.Device
	tnet       *netstack.Net
	tunAddr    netip.Addr
	priv, pub  [32]byte
	listenPort uint16
	log        *logBuf
}

func newKey(t *testing.T) (priv, pub [32]byte) {
	t.Helper()
	if _, err := rand.Read(priv[:]); err != nil {
		t.Fatal(err)
	}
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	copy(pub[:], p)
	return priv, pub
}

// newNode brings up a stock wireguard-go device on a netstack TUN, listening
// on a random UDP port.
func newNode(t *testing.T, name, tunAddr string) *node {
	t.Helper()
	n := &node{tunAddr: netip.MustParseAddr(tunAddr), log: &logBuf{}}
	n.priv, n.pub = newKey(t)
	tdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{n.tunAddr}, nil, 1420)
	if err != nil {
		t.Fatal(err)
	}
	n.tnet = tnet
	logf := func(format string, args ...any) { n.log.printf(name+": "+format, args...) }
	n.dev = device.NewDevice(tdev, conn.NewDefaultBind(), &device.Logger{Verbosef: logf, Errorf: logf})
	t.Cleanup(func() {
		n.dev.Close()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, n.log)
		}
	})
	if err := n.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(n.priv[:]))); err != nil {
		t.Fatal(err)
	}
	if err := n.dev.Up(); err != nil {
		t.Fatal(err)
	}
	port, err := strconv.ParseUint(n.get(t, "", "listen_port"), 10, 16)
	if err != nil || port == 0 {
		t.Fatalf("%s: listen_port: %q %v", name, n.get(t, "", "listen_port"), err)
	}
	n.listenPort = uint16(port)
	return n
}

func (n *node) endpoint() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.listenPort)
}

// addPeer configures p as a peer of n (allowed_ip = p's tunnel address/32).
func (n *node) addPeer(t *testing.T, p *node) {
	t.Helper()
	cfg := fmt.Sprintf("public_key=%s\nallowed_ip=%s/32\nendpoint=%s\n",
		hex.EncodeToString(p.pub[:]), p.tunAddr, p.endpoint())
	if err := n.dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
}

func (n *node) removePeer(t *testing.T, pub [32]byte) {
	t.Helper()
	if err := n.dev.IpcSet(fmt.Sprintf("public_key=%s\nremove=true\n", hex.EncodeToString(pub[:]))); err != nil {
		t.Fatal(err)
	}
}

// get returns key from n's IpcGet output: a device key if peer is "",
// otherwise the key of the peer with that hex public key ("" if absent).
func (n *node) get(t *testing.T, peer, key string) string {
	t.Helper()
	out, err := n.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		if k == "public_key" {
			cur = v
			continue
		}
		if k == key && cur == peer {
			return v
		}
	}
	return ""
}

// lastHandshake returns n's last_handshake_time for peer p (zero if none).
func (n *node) lastHandshake(t *testing.T, p [32]byte) time.Time {
	t.Helper()
	pk := hex.EncodeToString(p[:])
	sec, _ := strconv.ParseInt(n.get(t, pk, "last_handshake_time_sec"), 10, 64)
	nsec, _ := strconv.ParseInt(n.get(t, pk, "last_handshake_time_nsec"), 10, 64)
	if sec == 0 && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, nsec)
}

// serveTCP accepts connections on n's tunnel address and echoes.
func (n *node) serveTCP(t *testing.T, port uint16) {
	t.Helper()
	l, err := n.tnet.ListenTCPAddrPort(netip.AddrPortFrom(n.tunAddr, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// dialThroughTunnel TCP-dials to through n's tunnel and does one echo round trip.
func (n *node) dialThroughTunnel(to netip.AddrPort, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := n.tnet.DialContextTCPAddrPort(ctx, to)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return fmt.Errorf("echo: got %q", buf)
	}
	return nil
}

func udpConn(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const replayLog = "ConsumeMessageInitiation: handshake replay"

// TestClockWentBackwards: after the broker accepted one initiation from the
// device's key with a future timestamp, the real device cannot connect until
// the broker forgets the peer's handshake state (peer removed and re-added).
func TestClockWentBackwards(t *testing.T) {
	t.Parallel()
	broker := newNode(t, "broker", "10.77.0.1")
	dev := newNode(t, "device", "10.77.0.2")
	broker.addPeer(t, dev)
	dev.addPeer(t, broker)
	const echoPort = 7
	broker.serveTCP(t, echoPort)
	target := netip.AddrPortFrom(broker.tunAddr, echoPort)

	// 1) Forge an initiation "from" the device, timestamped a year ahead.
	future := time.Now().AddDate(1, 0, 0)
	if err := wgtest.SendInitiation(udpConn(t), broker.endpoint(), dev.priv, broker.pub, future); err != nil {
		t.Fatalf("forged future initiation: %v", err)
	}
	before := broker.lastHandshake(t, dev.pub)
	if !before.IsZero() {
		// The responder's session is only confirmed by the initiator's first
		// transport packet, which the forger never sends.
		t.Errorf("broker last_handshake after forged initiation = %v, want none", before)
	}

	// 2) The real device (current clock) now looks like its clock went backwards.
	start := time.Now()
	if err := dev.dialThroughTunnel(target, 12*time.Second); err == nil {
		t.Fatal("device reached broker although its timestamps are older than the accepted one")
	} else {
		t.Logf("as expected, device cannot reach broker (after %v): %v", time.Since(start).Round(time.Millisecond), err)
	}
	if n := broker.log.count(replayLog); n == 0 {
		t.Errorf("broker never logged %q; the failure is not the timestamp check", replayLog)
	} else {
		t.Logf("broker rejected %d device initiation(s) as replays", n)
	}
	if after := broker.lastHandshake(t, dev.pub); after.After(before) {
		t.Errorf("broker last_handshake for device advanced to %v", after)
	}

	// 3) Broker forgets the peer's handshake state: the device connects again.
	broker.removePeer(t, dev.pub)
	broker.addPeer(t, dev)
	start = time.Now()
	if err := dev.dialThroughTunnel(target, 15*time.Second); err != nil {
		t.Fatalf("device cannot reach broker after its peer was re-added: %v", err)
	}
	t.Logf("device reached broker %v after peer reset", time.Since(start).Round(time.Millisecond))
	if hs := broker.lastHandshake(t, dev.pub); hs.IsZero() {
		t.Error("broker shows no last_handshake for device after successful connection")
	}
}

// TestSendInitiationPastTimestamp: a fresh peer accepts any first timestamp,
// even one from 1970; later ones must be strictly newer; unknown keys fail.
func TestSendInitiationPastTimestamp(t *testing.T) {
	t.Parallel()
	broker := newNode(t, "broker", "10.78.0.1")
	priv, pub := newKey(t)
	if err := broker.dev.IpcSet(fmt.Sprintf("public_key=%s\nallowed_ip=10.78.0.2/32\n", hex.EncodeToString(pub[:]))); err != nil {
		t.Fatal(err)
	}
	c := udpConn(t)
	boot := time.Unix(42, 123456789) // a device that just rebooted into 1970

	if err := wgtest.SendInitiation(c, broker.endpoint(), priv, broker.pub, boot); err != nil {
		t.Fatalf("first (1970) initiation to fresh peer: %v", err)
	}
	// The responder rate-limits initiations per peer (HandshakeInitationRate, 20 ms).
	time.Sleep(100 * time.Millisecond)
	if err := wgtest.SendInitiation(c, broker.endpoint(), priv, broker.pub, boot.Add(time.Nanosecond)); err != nil {
		t.Fatalf("strictly newer initiation: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := wgtest.SendInitiation(c, broker.endpoint(), priv, broker.pub, boot); err == nil {
		t.Fatal("older initiation was answered; want replay rejection")
	}
	if broker.log.count(replayLog) != 1 {
		t.Errorf("broker logged %d replays, want 1", broker.log.count(replayLog))
	}

	unknownPriv, _ := newKey(t)
	if err := wgtest.SendInitiation(c, broker.endpoint(), unknownPriv, broker.pub, time.Now()); err == nil {
		t.Fatal("initiation from unknown key was answered")
	}
}
