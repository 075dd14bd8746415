//go:build linux

package e2e_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// TestACME: the broker obtains its certificate over ACME from pebble, Let's
// Encrypt's test CA, run here on loopback. Pebble validates for real: it
// resolves the broker's name through a DNS server of the test's own (every
// name is 127.0.0.1: ACME needs a name of two labels or more, which the
// system's resolver does not put on loopback), and its TLS-ALPN-01
// connection reaches the broker's HTTPS port, which answers the challenge on
// the same listener. A client trusting pebble's root (fetched from pebble's
// management API) then gets /healthz and an API answer; one trusting only
// the system's roots is refused. A restart serves the same certificate from
// --acme-cache without asking the CA again.
func TestACME(t *testing.T) {
	t.Parallel()
	const domain = "broker.fieldpass.test"
	httpAddr := freeAddr(t, "tcp")
	_, port, _ := net.SplitHostPort(httpAddr)
	peb := startPebble(t, port, startLoopbackDNS(t))

	dir := t.TempDir()
	// Clients reach the name on loopback, as the test's DNS says.
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, httpAddr)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: peb.roots}}}
	b := &broker{t: t, dir: dir, dbURL: pgtest.NewDatabase(t), id: brokerID, keyFile: filepath.Join(dir, "broker.key"),
		httpAddr: httpAddr, wgAddr: freeAddr(t, "udp"), publicURL: "https://" + domain + ":" + port, client: client}
	b.args = []string{"--acme-domain", domain, "--acme-directory", peb.directory, "--acme-ca-file", peb.serverCA,
		"--acme-email", "ops@example.com", "--acme-cache", filepath.Join(dir, "acme")}
	// The first /healthz waits for the whole ACME exchange.
	if err := b.start(); err != nil {
		t.Fatalf("%v\npebble log:\n%s", err, tail(peb.p.log(), 40))
	}
	first := servedCert(t, httpAddr, domain, peb.roots)
	if !strings.HasPrefix(first.Issuer.CommonName, "Pebble") || !contains(first.DNSNames, domain) {
		t.Errorf("served certificate: names %v, issuer %q; want %s, issued by pebble", first.DNSNames, first.Issuer, domain)
	}
	// Validated, not waved through: pebble's HTTP-01 port goes nowhere, so
	// the challenge that passed was TLS-ALPN-01.
	if !strings.Contains(peb.p.log(), "set VALID by completed challenge") {
		t.Errorf("pebble logged no validated challenge:\n%s", tail(peb.p.log(), 40))
	}

	// An API request over it: the enrolment endpoint refuses a bad token
	// with the API's JSON error, so the whole HTTPS path answered.
	resp, err := client.Post(b.URL()+"/api/v1/enroll", "application/json", strings.NewReader(`{"token":"fpe_not-a-token"}`))
	if err != nil {
		t.Fatalf("POST /api/v1/enroll over the ACME certificate: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 || !json.Valid(body) {
		t.Errorf("POST /api/v1/enroll with a bad token: %s %q; want a 4xx JSON refusal", resp.Status, body)
	}

	// A client that trusts only the system's roots refuses the
	// certificate: it is pebble's, not something accepted blindly.
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DialContext: dial}}
	if _, err := plain.Get(b.URL() + "/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET without pebble's root: %v; want a certificate error", err)
	}

	if err := b.p.signal(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	issued := strings.Count(peb.p.log(), "Issued certificate")
	b.restart()
	if again := servedCert(t, httpAddr, domain, peb.roots); !again.Equal(first) {
		t.Errorf("after a restart the broker serves another certificate (serial %s, was %s): --acme-cache was not used", again.SerialNumber, first.SerialNumber)
	}
	if n := strings.Count(peb.p.log(), "Issued certificate"); n != issued {
		t.Errorf("pebble issued %d more certificate(s) after the restart; want none (cached)", n-issued)
	}
}

// startLoopbackDNS runs a DNS server on a loopback port, UDP and TCP
// (pebble asks over TCP), that answers every A question with 127.0.0.1 and
// every other with no record, and returns its address.
func startLoopbackDNS(t *testing.T) string {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(127, 0, 0, 1)})
			}
		}
		w.WriteMsg(m)
	})
	for attempt := 1; ; attempt++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			if attempt < 5 {
				continue // the TCP port of that number was taken
			}
			t.Fatal(err)
		}
		for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
			go srv.ActivateAndServe()
			t.Cleanup(func() { srv.Shutdown() })
		}
		return pc.LocalAddr().String()
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// servedCert completes a TLS handshake with addr for name,
// verifying against roots, and returns the leaf certificate.
func servedCert(t *testing.T, addr, name string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS handshake with %s for %s: %v", addr, name, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// pebble is a running pebble ACME server.
type pebble struct {
	p         *proc
	directory string         // the ACME directory URL
	serverCA  string         // file of the CA that signed pebble's own HTTPS certificate
	rootFile  string         // file of the root pebble issues under
	roots     *x509.CertPool // holding that root
}

// startPebble builds pebble (a tool of this module: go.mod's tool
// directive pins its version) and runs it on loopback ports. It resolves
// names through dnsServer and validates TLS-ALPN-01 challenges by
// connecting to the name's address on tlsPort:
// a test cannot bind 443, so pebble is told where the broker listens.
func startPebble(t *testing.T, tlsPort, dnsServer string) *pebble {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "pebble")
	build := exec.Command("go", "build", "-o", bin, "github.com/letsencrypt/pebble/v2/cmd/pebble")
	build.Dir = bins.moduleRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build pebble: %v\n%s", err, out)
	}
	list := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2")
	list.Dir = bins.moduleRoot
	out, err := list.Output()
	if err != nil {
		t.Fatalf("find pebble's module: %v", err)
	}
	certs := filepath.Join(strings.TrimSpace(string(out)), "test", "certs")
	port, err := strconv.Atoi(tlsPort)
	if err != nil {
		t.Fatal(err)
	}
	listen, mgmt := freeAddr(t, "tcp"), freeAddr(t, "tcp")
	cfg, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    filepath.Join(certs, "localhost", "cert.pem"),
		"privateKey":                     filepath.Join(certs, "localhost", "key.pem"),
		"httpPort":                       1, // HTTP-01 is not offered by the broker
		"tlsPort":                        port,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	// No random sleeps before validating, no random nonce rejections: the
	// exchange is real, its timing deterministic.
	p := startProc(t, "pebble", filepath.Join(dir, "pebble.log"), env("PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"), bin, "-config", cfgFile, "-dnsserver", dnsServer)
	peb := &pebble{p: p, directory: "https://" + listen + "/dir", serverCA: filepath.Join(certs, "pebble.minica.pem"), rootFile: filepath.Join(dir, "pebble-root.pem")}

	// Pebble's root is made at start; its management API hands it out.
	caPEM, err := os.ReadFile(peb.serverCA)
	if err != nil {
		t.Fatal(err)
	}
	serverRoots := x509.NewCertPool()
	serverRoots.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: serverRoots}}}
	defer client.CloseIdleConnections()
	var root []byte
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get("https://" + mgmt + "/roots/0")
		if err == nil {
			root, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("pebble's root from its management API: %v\n%s", err, tail(p.log(), 30))
		}
	}
	peb.roots = x509.NewCertPool()
	if !peb.roots.AppendCertsFromPEM(root) {
		t.Fatalf("pebble's /roots/0 is not PEM: %q", root)
	}
	if err := os.WriteFile(peb.rootFile, root, 0o600); err != nil {
		t.Fatal(err)
	}
	return peb
}
