package broker_test

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/wgnet"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testLogger(tb testing.TB) *slog.Logger {
	if os.Getenv("FIELDPASS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// env is one broker with its database and enrolment API, all in-process,
// WireGuard on loopback.
type env struct {
	tb     testing.TB
	db     *postgres.DB
	key    wgnet.Key
	port   uint16
	b      *broker.Broker
	cancel context.CancelFunc
	done   chan error
	api    *httptest.Server
	cfg    broker.Config
}

func newEnv(tb testing.TB, mod func(*broker.Config)) *env {
	tb.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.NewDatabase(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(db.Close)
	key, err := wgnet.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	e := &env{tb: tb, db: db, key: key}
	e.cfg = broker.Config{
		ID:               "test-broker",
		PrivateKey:       key,
		WGListen:         netip.MustParseAddrPort("127.0.0.1:0"),
		PresenceInterval: 200 * time.Millisecond,
		Logger:           testLogger(tb),
	}
	if mod != nil {
		mod(&e.cfg)
	}
	e.start()
	tb.Cleanup(func() { e.api.Close() })
	tb.Cleanup(e.stop)
	return e
}

// start runs a broker; after a stop it reuses the same key and UDP port, as
// a restarted broker process would.
func (e *env) start() {
	e.tb.Helper()
	cfg := e.cfg
	if e.port != 0 {
		cfg.WGListen = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.port)
	}
	b, err := broker.New(context.Background(), cfg, e.db)
	if err != nil {
		e.tb.Fatal(err)
	}
	e.b, e.port = b, b.ListenPort()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- b.Serve(ctx) }()
	if e.api == nil {
		api := httpapi.New(httpapi.Config{
			DB: e.db,
			Tunnel: httpapi.TunnelInfo{
				BrokerKey:     b.PublicKey().String(),
				BrokerAddress: b.Address(),
				Prefix:        b.Prefix(),
				Endpoints:     []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.port).String()},
				MTU:           b.MTU(),
			},
			EnrollRate:  1000,
			EnrollBurst: 1000,
			Logger:      testLogger(e.tb),
		})
		e.api = httptest.NewServer(api.Handler())
	}
}

func (e *env) stop() {
	if e.b == nil {
		return
	}
	e.cancel()
	<-e.done
	e.b.Close()
	e.b = nil
}

// enroll makes a token for name and enrols a connector state into a temp dir.
func (e *env) enroll(name string) *connector.State {
	e.tb.Helper()
	ctx := context.Background()
	tok, _, err := e.db.CreateEnrollmentToken(ctx, name, nil, time.Hour)
	if err != nil {
		e.tb.Fatal(err)
	}
	s, err := connector.Enroll(ctx, connector.EnrollConfig{BrokerURL: e.api.URL, Token: tok, StateDir: e.tb.TempDir() + "/state"})
	if err != nil {
		e.tb.Fatal(err)
	}
	return s
}

type runningConnector struct {
	*connector.Connector
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop ends Run and tears the tunnel down; safe to call twice.
func (rc *runningConnector) stop() {
	rc.once.Do(func() {
		rc.cancel()
		<-rc.done
		rc.Close()
	})
}

// startConnector runs a connector for state with the given services.
func (e *env) startConnector(s *connector.State, services map[string]string, mod func(*connector.Config)) *runningConnector {
	e.tb.Helper()
	cfg := connector.Config{
		State:       s,
		Services:    services,
		ListenAddr:  netip.MustParseAddrPort("127.0.0.1:0"),
		MinBackoff:  100 * time.Millisecond,
		MaxBackoff:  time.Second,
		DialTimeout: 5 * time.Second,
		NetworkPoll: -1,
		Logger:      testLogger(e.tb),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := connector.New(cfg)
	if err != nil {
		e.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningConnector{Connector: c, cancel: cancel, done: make(chan error, 1)}
	go func() { rc.done <- c.Run(ctx) }()
	e.tb.Cleanup(rc.stop)
	return rc
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("timed out after %s waiting for %s", timeout, what)
	return 0
}

// echoServer is a real TCP service on loopback that echoes what it reads.
func echoServer(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// closedPort returns a loopback address where nothing listens.
func closedPort(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}
