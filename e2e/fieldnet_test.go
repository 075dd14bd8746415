//go:build linux

package e2e_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// The field network: what a fleet of cellular devices and the people
// reaching them look like, built from network namespaces and veth pairs.
//
//	engineer ns ── 198.51.100.0/30 ──┐
//	                                 inet ns ("the internet"): broker on 192.0.2.10
//	carrier ns ─── 203.0.113.0/30 ───┘    (on its loopback), forwarding on
//	  │ NAT: masquerade (fully random ports) of 10.64.0.0/16 out of 203.0.113.2;
//	  │ forward policy drop: only established/related comes back in
//	  └ bridge "apn" 10.64.0.1/16 ── one veth per device namespace
//	device ns: wan0 10.64.x.y/16, default via 10.64.0.1; connector, sshd, web
//
// No namespace has a route to any address outside these, and the root
// namespace is not touched: no interface, route or rule is added there.
// Traffic between the test process and a namespace uses sockets the test
// opens inside that namespace (netns.do).
const (
	brokerPublicIP  = "192.0.2.10"  // the broker's public address, in inet
	carrierPublicIP = "203.0.113.2" // the carrier NAT's public address
	engineerIP      = "198.51.100.2"
	apnGateway      = "10.64.0.1"
	apnPrefixLen    = 16
)

// netns is a network namespace made by the test, by name (/run/netns/NAME).
type netns string

// nsPrefix marks the namespaces of this test binary: "fpt" and its pid, so
// that a later run can remove the ones a killed run left behind.
var nsPrefix = fmt.Sprintf("fpt%d-", os.Getpid())

var nsStaleRE = regexp.MustCompile(`^fpt(\d+)-`)

// needNetns skips the test where network namespaces cannot be made (not
// root, no iproute2, a sandbox without CAP_SYS_ADMIN), and fails it when
// they can but nftables or conntrack, which .ci/run installs, are missing.
// It also removes namespaces left by earlier runs that were killed.
func needNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("field network: needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("field network: iproute2 (ip) is not installed")
	}
	probe := nsPrefix + "probe" + randomHex(3)
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("field network: cannot create a network namespace here: %v: %s", err, bytes.TrimSpace(out))
	}
	exec.Command("ip", "netns", "del", probe).Run()
	for _, tool := range []string{"nft", "conntrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("field network: %s is not installed (.ci/run installs nftables and conntrack)", tool)
		}
	}
	sweepStaleNamespaces()
}

// sweepStaleNamespaces removes the namespaces of test binaries that no
// longer run.
func sweepStaleNamespaces() {
	es, _ := os.ReadDir("/run/netns")
	for _, e := range es {
		m := nsStaleRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newNetns creates a namespace with its loopback up; it is deleted when the
// test ends (after the processes started in it, which were started later and
// so are cleaned up first).
func newNetns(t *testing.T, role string) netns {
	t.Helper()
	n := netns(nsPrefix + randomHex(2) + "-" + role)
	mustRun(t, "ip", "netns", "add", string(n))
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", string(n)).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n, err, out)
		}
	})
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// mustRun runs a setup command, failing the test with its output if it fails.
func mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ip runs `ip -n NS args...`.
func (n netns) ip(t testing.TB, args ...string) string {
	t.Helper()
	return mustRun(t, "ip", append([]string{"-n", string(n)}, args...)...)
}

// exec runs a command inside the namespace and fails the test if it fails.
func (n netns) exec(t testing.TB, args ...string) string {
	t.Helper()
	return mustRun(t, "ip", n.argv(args[0], args[1:]...)...)
}

// argv is the argument list of `ip` that runs bin in the namespace; `ip
// netns exec` execs bin itself, so the process started is bin.
func (n netns) argv(bin string, args ...string) []string {
	return append([]string{"netns", "exec", string(n), bin}, args...)
}

// nft loads an nftables script into the namespace.
func (n netns) nft(t testing.TB, script string) {
	t.Helper()
	cmd := exec.Command("ip", n.argv("nft", "-f", "-")...)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s\nscript:\n%s", n, err, out, script)
	}
}

// sysctl sets a /proc/sys value inside the namespace.
func (n netns) sysctl(t testing.TB, key, value string) {
	t.Helper()
	n.exec(t, "sh", "-c", fmt.Sprintf("echo %s > /proc/sys/%s", value, strings.ReplaceAll(key, ".", "/")))
}

// do runs f on an OS thread switched into the namespace, so that sockets f
// opens live there (a socket keeps its namespace for life). The thread is
// switched back before it is released; if that fails it is never reused.
func (n netns) do(f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + string(n))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", n, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime ends it with this goroutine.
		return errors.Join(ferr, fmt.Errorf("setns back: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// listen opens a listener inside the namespace.
func (n netns) listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := n.do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, n, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// listenUDP opens a UDP socket inside the namespace.
func (n netns) listenUDP(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := n.do(func() error {
		a, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP("udp", a)
		return err
	})
	if err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, n, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dial connects from inside the namespace. Only the socket's creation and
// connect need the namespace; the connection then works from any thread.
func (n netns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// httpClient is an HTTP client whose connections start in the namespace and
// that trusts pool (nil: the system's roots).
func (n netns) httpClient(pool *x509.CertPool) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:           nil,
			DialContext:     n.dial,
			TLSClientConfig: &tls.Config{RootCAs: pool},
		},
	}
}

// vethPair links namespace a (interface aName) and b (bName).
func vethPair(t testing.TB, a netns, aName string, b netns, bName string) {
	t.Helper()
	a.ip(t, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", string(b))
	a.ip(t, "link", "set", aName, "up")
	b.ip(t, "link", "set", bName, "up")
}

// fieldNet is one test's field network.
type fieldNet struct {
	t                   *testing.T
	dir                 string
	inet, carrier, eng  netns
	ca                  *testCA
	mu                  sync.Mutex
	devices             int // device namespaces made, for addressing
	caFile              string
	brokerCert, brokerK string
	broker              *broker // once started
	pg                  *pgLink // the broker's link to Postgres
}

// carrierRules is the carrier's NAT and firewall. Devices on the APN may
// open flows towards the internet; nothing else is forwarded. The
// conditions chain, hooked before the firewall, is where tests add loss and
// blackouts (conditions).
const carrierRules = `
table ip carrier {
	chain conditions {
		type filter hook forward priority -10; policy accept;
	}
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state established,related accept
		iifname "apn" oifname "wan" accept
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		ip saddr 10.64.0.0/16 oifname "wan" masquerade fully-random
	}
}
`

// newFieldNet builds the internet, carrier and engineer namespaces and a
// certificate authority for the broker's TLS. Devices are added with
// addDevice.
func newFieldNet(t *testing.T) *fieldNet {
	t.Helper()
	needNetns(t)
	f := &fieldNet{t: t, dir: t.TempDir()}
	f.inet = newNetns(t, "inet")
	f.carrier = newNetns(t, "carrier")
	f.eng = newNetns(t, "eng")

	// The internet: the broker's public address on its loopback (a dummy
	// interface needs a kernel module this machine lacks), a link to the
	// carrier and one to the engineer.
	f.inet.ip(t, "addr", "add", brokerPublicIP+"/32", "dev", "lo")
	vethPair(t, f.inet, "car", f.carrier, "wan")
	f.inet.ip(t, "addr", "add", "203.0.113.1/30", "dev", "car")
	f.carrier.ip(t, "addr", "add", carrierPublicIP+"/30", "dev", "wan")
	f.carrier.ip(t, "route", "add", "default", "via", "203.0.113.1")
	vethPair(t, f.inet, "eng", f.eng, "wan")
	f.inet.ip(t, "addr", "add", "198.51.100.1/30", "dev", "eng")
	f.eng.ip(t, "addr", "add", engineerIP+"/30", "dev", "wan")
	f.eng.ip(t, "route", "add", "default", "via", "198.51.100.1")
	f.inet.sysctl(t, "net.ipv4.ip_forward", "1")

	// The carrier: a bridge for the private APN, NAT towards the internet.
	f.carrier.ip(t, "link", "add", "apn", "type", "bridge")
	f.carrier.ip(t, "addr", "add", fmt.Sprintf("%s/%d", apnGateway, apnPrefixLen), "dev", "apn")
	f.carrier.ip(t, "link", "set", "apn", "up")
	f.carrier.sysctl(t, "net.ipv4.ip_forward", "1")
	f.carrier.nft(t, carrierRules)

	f.ca = newTestCA(t)
	f.caFile = filepath.Join(f.dir, "ca.pem")
	f.brokerCert, f.brokerK = f.ca.issue(t, f.dir, "broker", netip.MustParseAddr(brokerPublicIP))
	if err := os.WriteFile(f.caFile, f.ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// fieldDevice is one device namespace on the carrier's APN.
type fieldDevice struct {
	f    *fieldNet
	name string
	ns   netns
	n    int        // its number on the APN
	addr netip.Addr // its current APN address
}

// addDevice makes a device namespace on the APN, with a default route via
// the carrier and nothing else.
func (f *fieldNet) addDevice(name string) *fieldDevice {
	t := f.t
	t.Helper()
	f.mu.Lock()
	f.devices++
	n := f.devices
	f.mu.Unlock()
	d := &fieldDevice{f: f, name: name, ns: newNetns(t, "dev"+strconv.Itoa(n)), n: n}
	port := "d" + strconv.Itoa(n)
	vethPair(t, f.carrier, port, d.ns, "wan0")
	f.carrier.ip(t, "link", "set", port, "master", "apn")
	d.setAddr(t, apnAddr(n, 0))
	return d
}

// apnAddr is device n's address on the APN; generation g counts the
// addresses it has been given (roaming).
func apnAddr(n, g int) netip.Addr {
	host := 10 + n + 1000*g // 10.64.0.10 and up; roamed addresses well apart
	return netip.AddrFrom4([4]byte{10, 64, byte(host >> 8), byte(host)})
}

func (d *fieldDevice) setAddr(t testing.TB, a netip.Addr) {
	t.Helper()
	d.ns.ip(t, "addr", "flush", "dev", "wan0")
	d.ns.ip(t, "addr", "add", fmt.Sprintf("%s/%d", a, apnPrefixLen), "dev", "wan0")
	d.ns.ip(t, "route", "replace", "default", "via", apnGateway)
	d.addr = a
}

// roam moves the device to a new APN address, as a cellular device gets on
// re-attach, and flushes the carrier's NAT mappings, so that its traffic
// leaves from a new public port too. It returns the new address.
func (d *fieldDevice) roam(t testing.TB, generation int) netip.Addr {
	t.Helper()
	d.setAddr(t, apnAddr(d.n, generation))
	d.f.flushNAT(t)
	return d.addr
}

// flushNAT forgets every NAT mapping of the carrier, as a carrier-grade NAT
// does when it times one out or restarts.
func (f *fieldNet) flushNAT(t testing.TB) {
	t.Helper()
	f.carrier.exec(t, "conntrack", "-F")
}

// conditions replaces the carrier's network conditions with rules (nft
// rule bodies, applied in both directions to everything it forwards); none
// restores a clean link.
func (f *fieldNet) conditions(t testing.TB, rules ...string) {
	t.Helper()
	script := "flush chain ip carrier conditions\n"
	for _, r := range rules {
		script += "add rule ip carrier conditions " + r + "\n"
	}
	f.carrier.nft(t, script)
}

// Conditions for fieldNet.conditions.
const (
	lossRule     = "numgen random mod 100 < %d drop" // with the percentage
	blackoutRule = "drop"
)

// testCA is a certificate authority of the test's own: the broker serves
// HTTPS with a certificate it issued, and the CLI and connectors trust it
// through SSL_CERT_FILE, as they would a corporate CA.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fieldpass e2e CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: pool}
}

// issue writes a server certificate for ip and its key into dir and
// returns their paths.
func (ca *testCA) issue(t testing.TB, dir, name string, ip netip.Addr) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{ip.AsSlice()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// pgLink carries the broker's Postgres connections from the internet
// namespace to the test's cluster on the root namespace's loopback, and can
// cut them: the database's side of a network partition.
type pgLink struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{} // relayed, both ends
	held  []net.Conn            // accepted while down
}

// newPGLink listens on 127.0.0.1 inside ns and returns the database URL the
// broker there uses, which is dbURL with its host replaced.
func newPGLink(t testing.TB, ns netns, dbURL string) (*pgLink, string) {
	t.Helper()
	m := regexp.MustCompile(`@([0-9.]+:[0-9]+)/`).FindStringSubmatch(dbURL)
	if m == nil {
		t.Fatalf("pgLink: no host:port in %q", dbURL)
	}
	l := &pgLink{ln: ns.listen(t, "tcp", "127.0.0.1:0"), target: m[1], conns: map[net.Conn]struct{}{}}
	go l.serve()
	t.Cleanup(func() {
		l.ln.Close()
		l.setDown(true)
		for _, c := range l.held {
			c.Close()
		}
	})
	return l, strings.Replace(dbURL, m[1], l.ln.Addr().String(), 1)
}

func (l *pgLink) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.down {
			// A partition: no byte gets through, as for a SYN the
			// network drops, until the link is back (the client's
			// retransmission would then get through) or the client
			// gives up.
			l.held = append(l.held, c)
			l.mu.Unlock()
			continue
		}
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		go l.relay(c)
	}
}

func (l *pgLink) relay(c net.Conn) {
	up, err := net.Dial("tcp", l.target)
	if err != nil {
		c.Close()
		return
	}
	l.mu.Lock()
	l.conns[up] = struct{}{}
	l.mu.Unlock()
	go func() { io.Copy(up, c); up.Close() }()
	io.Copy(c, up)
	c.Close()
}

// setDown cuts (true) or restores (false) the link. Cutting closes every
// connection, as the broker would see its Postgres host restart; while down,
// new connections get no answer. Restoring relays those still waiting.
func (l *pgLink) setDown(down bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = down
	if down {
		for c := range l.conns {
			c.Close()
		}
		clear(l.conns)
		return
	}
	for _, c := range l.held {
		l.conns[c] = struct{}{}
		go l.relay(c)
	}
	l.held = nil
}

// env is the environment of a process in the field network: it trusts the
// test's CA.
func (f *fieldNet) env(extra ...string) []string {
	return env(append([]string{"SSL_CERT_FILE=" + f.caFile}, extra...)...)
}

// startBroker starts fieldpass-broker serve in the internet namespace: HTTPS
// and WireGuard on the public address, Postgres through a pgLink (f.pg).
func (f *fieldNet) startBroker(args ...string) *broker {
	t := f.t
	t.Helper()
	b := &broker{t: t, dir: t.TempDir(), dbURL: pgtest.NewDatabase(t), id: brokerID, ns: f.inet}
	b.keyFile = filepath.Join(b.dir, "broker.key")
	f.pg, b.serveDBURL = newPGLink(t, f.inet, b.dbURL)
	b.httpAddr = brokerPublicIP + ":443"
	b.wgAddr = brokerPublicIP + ":51820"
	b.publicURL = "https://" + brokerPublicIP
	b.client = f.inet.httpClient(f.ca.pool)
	b.args = append([]string{"--tls-cert", f.brokerCert, "--tls-key", f.brokerK}, args...)
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	f.broker = b
	return b
}

// enroll enrols the device's connector with the broker, across the carrier
// and over HTTPS, into a new state directory, which it returns.
func (d *fieldDevice) enroll() string {
	t := d.f.t
	t.Helper()
	stateDir := filepath.Join(t.TempDir(), "state-"+d.name)
	r := runCmd(t, d.f.env(), "ip", d.ns.argv(bins.connector, "enroll", "--broker", d.f.broker.URL(), "--token", d.f.broker.token(d.name), "--state-dir", stateDir)...)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	return stateDir
}

// startConnector runs the device's connector from stateDir; WireGuard binds
// all of the device's addresses, as on a real device.
func (d *fieldDevice) startConnector(stateDir string, args ...string) *proc {
	t := d.f.t
	t.Helper()
	all := append([]string{"run", "--state-dir", stateDir, "--log-level", "debug"}, args...)
	logPath := filepath.Join(t.TempDir(), "connector-"+d.name+".log")
	return startProc(t, "connector "+d.name, logPath, d.f.env(), "ip", d.ns.argv(bins.connector, all...)...)
}

// serveEcho runs an echo service on all of the device's addresses at port.
func (d *fieldDevice) serveEcho(port int) {
	go serveConns(d.ns.listen(d.f.t, "tcp", fmt.Sprintf("0.0.0.0:%d", port)), echo)
}

// serveWeb runs the device's web interface on all of its addresses at port:
// a page naming the device.
func (d *fieldDevice) serveWeb(port int) {
	ln := d.ns.listen(d.f.t, "tcp", fmt.Sprintf("0.0.0.0:%d", port))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "web interface of %s\n", d.name)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(ln)
	d.f.t.Cleanup(func() { srv.Close() })
}

// person is someone using the CLI from the engineer namespace with an
// automation token.
func (f *fieldNet) person(email string, role fieldpass.Role) person {
	f.t.Helper()
	p := f.broker.tokenPerson(email, role)
	p.ns = f.eng
	p.env = append(p.env, "SSL_CERT_FILE="+f.caFile, "XDG_CONFIG_HOME="+f.t.TempDir())
	return p
}

// forward runs `fieldpass forward DEVICE SERVICE` as p in its namespace and
// returns the local address it listens on there.
func (p person) forward(t *testing.T, device, service string) (string, *running) {
	t.Helper()
	r := startCmd(t, p.env, "ip", p.ns.argv(bins.cli, "forward", device, service)...)
	m := r.waitOutput(t, 30*time.Second, regexp.MustCompile(`^forwarding (\S+) to `))
	return m[1], r
}

// unreachable checks that a TCP connection from ns to addr fails within
// timeout, and returns how it failed.
func unreachable(t *testing.T, ns netns, addr string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := ns.dial(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		t.Errorf("from %s, %s is reachable: want no way in", ns, addr)
		return ""
	}
	return err.Error()
}

// quantile is the q-quantile of samples (nearest rank).
func quantile(samples []time.Duration, q float64) time.Duration {
	s := slices.Clone(samples)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}
