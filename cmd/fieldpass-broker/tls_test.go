package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// selfSigned writes a self-signed certificate for localhost named cn, and
// its key, to the files certFile and keyFile (replacing them with a rename,
// as certbot and Kubernetes do, when rename is set), and returns the
// certificate.
func selfSigned(t testing.TB, cn, certFile, keyFile string, rename bool) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(path string, b []byte) {
		target := path
		if rename {
			target = path + ".new"
		}
		if err := os.WriteFile(target, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if rename {
			if err := os.Rename(target, path); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// servedCN completes a TLS handshake with addr and returns the common name
// of the certificate the server presented.
func servedCN(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestFileCertReload: a changed pair of files is served from the next
// check on; a pair that does not load keeps the previous certificate in
// service, said once in the log, until it is fixed.
func TestFileCertReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	selfSigned(t, "first", certFile, keyFile, false)
	var logs bytes.Buffer
	fc, err := newFileCert(certFile, keyFile, 0, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	cn := func() string {
		c, err := fc.getCertificate(&tls.ClientHelloInfo{ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.Subject.CommonName
	}
	if got := cn(); got != "first" {
		t.Fatalf("served %q, want first", got)
	}
	selfSigned(t, "second", certFile, keyFile, false) // rewritten in place
	if got := cn(); got != "second" {
		t.Fatalf("after rewriting the files: served %q, want second", got)
	}
	// A certificate whose key has not arrived yet.
	selfSigned(t, "third", certFile, filepath.Join(dir, "elsewhere.key"), false)
	for range 3 {
		if got := cn(); got != "second" {
			t.Fatalf("with a mismatched pair: served %q, want the previous one (second)", got)
		}
	}
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Errorf("the broken pair was logged %d times, want once:\n%s", n, logs.String())
	}
	selfSigned(t, "fourth", certFile, keyFile, true)
	if got := cn(); got != "fourth" {
		t.Fatalf("after replacing the files by rename: served %q, want fourth", got)
	}
}

// TestServeTLSReload starts serve with --tls-cert, replaces the files as
// certbot does, and sees a new handshake get the new certificate without a
// restart.
func TestServeTLSReload(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	selfSigned(t, "before-renewal", certFile, keyFile, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		getenv := func(k string) string {
			if k == "FIELDPASS_DATABASE_URL" {
				return dbURL
			}
			return ""
		}
		done <- run(ctx, []string{"serve", "--public-url", "https://localhost:" + strings.Split(addr, ":")[1],
			"--http-listen", addr, "--wg-listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile,
			"--init", "--key-file", filepath.Join(dir, "broker.key")}, getenv, io.Discard, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	waitUntil(t, 20*time.Second, "serve answers TLS", done, func() bool {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if got := servedCN(t, addr); got != "before-renewal" {
		t.Fatalf("served %q, want before-renewal", got)
	}
	selfSigned(t, "after-renewal", certFile, keyFile, true)
	// The files are checked at most once a second.
	waitUntil(t, 10*time.Second, "the renewed certificate is served", done, func() bool { return servedCN(t, addr) == "after-renewal" })
}

// waitUntil polls cond until it holds, failing the test after timeout or
// if serve (done) exits first.
func waitUntil(t *testing.T, timeout time.Duration, what string, done chan error, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not so after %s: %s", timeout, what)
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("serve exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestServeACMEFlags: ACME flags that could never give the public URL a
// certificate are refused at once, saying what to give.
func TestServeACMEFlags(t *testing.T) {
	key := filepath.Join(t.TempDir(), "broker.key")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--acme-domain", "other.example.com"}, "add --acme-domain fieldpass.example.com"},
		{[]string{"--acme-domain", "*.example.com"}, "no wildcard"},
		{[]string{"--acme-domain", "fieldpass.example.com", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, "exclude each other"},
		{[]string{"--tls-cert", "c.pem"}, "go together"},
	} {
		args := append([]string{"serve", "--public-url", "https://fieldpass.example.com", "--key-file", key}, tc.args...)
		_, _, err := runCmd(t, "postgres://nobody@127.0.0.1:1/none", args...)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %s: got %v, want a usage error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

// BenchmarkTLSHandshake: a full TLS 1.3 handshake over loopback with the
// certificate from files (stat of both files at most once a second, as
// serve runs it, and at every handshake, the worst case), next to the
// baseline of a certificate loaded once.
func BenchmarkTLSHandshake(b *testing.B) {
	dir := b.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	selfSigned(b, "bench", certFile, keyFile, false)
	static, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name string
		get  func() func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	}{
		{"static", func() func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &static, nil }
		}},
		{"files-checked-per-second", func() func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			fc, err := newFileCert(certFile, keyFile, time.Second, log)
			if err != nil {
				b.Fatal(err)
			}
			return fc.getCertificate
		}},
		{"files-checked-every-handshake", func() func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			fc, err := newFileCert(certFile, keyFile, 0, log)
			if err != nil {
				b.Fatal(err)
			}
			return fc.getCertificate
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			tln := tls.NewListener(ln, &tls.Config{GetCertificate: tc.get()})
			go func() {
				for {
					c, err := tln.Accept()
					if err != nil {
						return
					}
					go func() { c.(*tls.Conn).Handshake(); c.Close() }()
				}
			}()
			cfg := &tls.Config{InsecureSkipVerify: true}
			b.ResetTimer()
			for b.Loop() {
				c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkFileCertCheck: what one check of the files costs a handshake
// (two stats), next to the lookup alone when the check is not due.
func BenchmarkFileCertCheck(b *testing.B) {
	dir := b.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	selfSigned(b, "bench", certFile, keyFile, false)
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{{"not-due", time.Hour}, {"stat-both-files", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			fc, err := newFileCert(certFile, keyFile, tc.interval, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := fc.getCertificate(nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// addrListener is a listener known only by its address.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l addrListener) Addr() net.Addr { return l.addr }

// TestPlainHTTPWarning: plain HTTP is said to be for a TLS proxy only when
// it is served beyond loopback.
func TestPlainHTTPWarning(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		warn bool
	}{{"127.0.0.1", false}, {"::1", false}, {"0.0.0.0", true}, {"192.0.2.10", true}} {
		var logs bytes.Buffer
		plainHTTPWarning(addrListener{addr: &net.TCPAddr{IP: net.ParseIP(tc.ip), Port: 8080}}, slog.New(slog.NewTextHandler(&logs, nil)))
		if got := strings.Contains(logs.String(), "--tls-cert/--tls-key or --acme-domain"); got != tc.warn {
			t.Errorf("plain HTTP on %s: warned %v, want %v (%q)", tc.ip, got, tc.warn, logs.String())
		}
	}
}
