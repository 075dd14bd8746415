package brokerlink_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/brokerlink"
	"github.com/fieldpass/fieldpass/tunnel"
)

// ca is a test certificate authority.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &ca{cert: cert, key: key, pool: pool}
}

// issue makes a certificate for broker name, good for both ends of a link.
func (c *ca) issue(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// holder is a broker's side of the link over sessions whose streams reach
// an echo server: the boundary the link is tested at (the broker's own
// Sessions implement it for real).
type holder struct {
	echo string
	mu   sync.Mutex
	sess []*session
	// refuse, when set, is the answer to every open.
	refuse error
}

type session struct {
	rec    fieldpass.Session
	done   chan struct{}
	mu     sync.Mutex
	reason fieldpass.EndReason
	conns  []net.Conn
}

func (h *holder) OpenFor(ctx context.Context, req brokerlink.OpenRequest) (brokerlink.Session, error) {
	if h.refuse != nil {
		return nil, h.refuse
	}
	s := &session{rec: fieldpass.Session{ID: "0b5e6c3e-8d0a-4c55-9f39-1f6f3c8c2a11", User: req.User, Device: req.Device, Service: req.Service, BrokerID: "holder"}, done: make(chan struct{})}
	h.mu.Lock()
	h.sess = append(h.sess, s)
	h.mu.Unlock()
	return s, nil
}

func (s *session) ID() string                  { return s.rec.ID }
func (s *session) Record() fieldpass.Session   { return s.rec }
func (s *session) GrantEnd() time.Time         { return time.Now().Add(time.Hour) }
func (s *session) Done() <-chan struct{}       { return s.done }
func (s *session) Reason() fieldpass.EndReason { s.mu.Lock(); defer s.mu.Unlock(); return s.reason }
func (s *session) Stream(ctx context.Context) (tunnel.HalfCloser, error) {
	c, err := net.Dial("tcp", echoAddr)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	return c.(*net.TCPConn), nil
}
func (s *session) End(r fieldpass.EndReason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reason != "" {
		return
	}
	s.reason = r
	close(s.done)
	for _, c := range s.conns {
		c.Close()
	}
}

var echoAddr string

func TestMain(m *testing.M) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	echoAddr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	m.Run()
}

type pair struct {
	h      *holder
	addr   string
	dialer *brokerlink.Dialer
}

func newPair(t *testing.T, fleet *ca, clientCert *tls.Certificate) *pair {
	t.Helper()
	h := &holder{}
	srv, err := brokerlink.NewServer(h, &tls.Config{
		Certificates: []tls.Certificate{fleet.issue(t, "broker-b")},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: fleet.pool,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.Serve(ctx, ln)
	cert := fleet.issue(t, "broker-a")
	if clientCert != nil {
		cert = *clientCert
	}
	d, err := brokerlink.NewDialer(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: fleet.pool, ServerName: "broker-b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return &pair{h: h, addr: ln.Addr().String(), dialer: d}
}

func (p *pair) open(t *testing.T) (*brokerlink.Link, *brokerlink.Remote) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := p.dialer.Link(ctx, p.addr)
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Open(ctx, brokerlink.OpenRequest{User: "eng@example.com", Device: "pump-1", Service: "ssh", ServedBy: "broker-a"})
	if err != nil {
		t.Fatal(err)
	}
	return l, r
}

func echo(t *testing.T, c tunnel.HalfCloser, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo = %q, %v; want %q", buf, err, msg)
	}
}

func waitDone(t *testing.T, ch <-chan struct{}, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-ch:
		return time.Since(start)
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not within 5 s", what)
		return 0
	}
}

func TestOpenStreamAndEnds(t *testing.T) {
	p := newPair(t, newCA(t, "fleet"), nil)
	_, r := p.open(t)
	if r.Record().User != "eng@example.com" || r.Record().Device != "pump-1" {
		t.Fatalf("record = %+v", r.Record())
	}
	ctx := context.Background()
	for i := range 3 {
		c, err := r.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		echo(t, c, strings.Repeat("x", 1+i*50000))
		c.Close()
	}

	// Ended at the holder (a revocation): the serving side learns at once,
	// and the person's stream stops.
	c, err := r.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.h.mu.Lock()
	hs := p.h.sess[0]
	p.h.mu.Unlock()
	hs.End(fieldpass.EndGrantRevoked)
	took := waitDone(t, r.Done(), "the serving side to learn of the end")
	if r.Reason() != fieldpass.EndGrantRevoked {
		t.Fatalf("reason = %q, want grant_revoked", r.Reason())
	}
	t.Logf("end at the holder seen by the serving broker in %s", took)
	if d, ok := c.(interface{ SetReadDeadline(time.Time) error }); ok {
		d.SetReadDeadline(time.Now().Add(5 * time.Second))
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the person's stream after the end: %v, want EOF", err)
	}
	if _, err := r.Stream(ctx); err == nil {
		t.Fatal("a stream on an ended session opened")
	}

	// Ended by the person: the holder records their reason.
	_, r2 := p.open(t)
	p.h.mu.Lock()
	hs2 := p.h.sess[1]
	p.h.mu.Unlock()
	r2.End(fieldpass.EndClientClosed)
	waitDone(t, hs2.Done(), "the holder to end the session")
	if hs2.Reason() != fieldpass.EndClientClosed {
		t.Fatalf("holder's reason = %q", hs2.Reason())
	}
}

func TestRefusalKeepsCodeAndReason(t *testing.T) {
	p := newPair(t, newCA(t, "fleet"), nil)
	p.h.refuse = fieldpass.Deny(fieldpass.DenyGrantExpired, fieldpass.Errorf(fieldpass.EEXPIRED, "your grant for pump-1/ssh expired at 2026-12-05T00:00:00Z"))
	l, err := p.dialer.Link(context.Background(), p.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Open(context.Background(), brokerlink.OpenRequest{User: "eng@example.com", Device: "pump-1", Service: "ssh"})
	if fieldpass.ErrorCode(err) != fieldpass.EEXPIRED || fieldpass.DenyReasonOf(err) != fieldpass.DenyGrantExpired || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("err = %v (code %s, deny %s); want the holder's refusal", err, fieldpass.ErrorCode(err), fieldpass.DenyReasonOf(err))
	}
}

// The serving broker dies: the holder ends the sessions it relayed.
func TestBrokenLinkEndsSessions(t *testing.T) {
	p := newPair(t, newCA(t, "fleet"), nil)
	l, _ := p.open(t)
	p.h.mu.Lock()
	hs := p.h.sess[0]
	p.h.mu.Unlock()
	l.Close()
	waitDone(t, hs.Done(), "the holder to end a session whose link broke")
}

// Only brokers with a certificate of the fleet's CA get a link.
func TestLinkNeedsTheFleetsCertificate(t *testing.T) {
	fleet := newCA(t, "fleet")
	stranger := newCA(t, "stranger").issue(t, "broker-x")
	p := newPair(t, fleet, &stranger)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := p.dialer.Link(ctx, p.addr)
	if err == nil {
		// TLS 1.3 reports a refused client certificate on first use.
		_, err = l.Open(ctx, brokerlink.OpenRequest{User: "eng@example.com", Device: "pump-1", Service: "ssh"})
	}
	if err == nil {
		t.Fatal("a broker outside the fleet's CA opened a session")
	}
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	if len(p.h.sess) != 0 {
		t.Fatal("the holder opened a session for a stranger")
	}
}

// A session can be streamed only over the link that opened it.
func TestStreamOnlyOnItsLink(t *testing.T) {
	fleet := newCA(t, "fleet")
	p := newPair(t, fleet, nil)
	_, r := p.open(t)
	other, err := brokerlink.NewDialer(&tls.Config{Certificates: []tls.Certificate{fleet.issue(t, "broker-c")}, RootCAs: fleet.pool, ServerName: "broker-b"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	l2, err := other.Link(context.Background(), p.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := brokerlink.StreamOn(context.Background(), l2, r.ID()); fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND {
		t.Fatalf("a stream of another link's session: err = %v, want not_found", err)
	}
}
