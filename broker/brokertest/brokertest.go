// Package brokertest is test support, as net/http/httptest is: it runs a
// broker with its database and enrolment API in the test process, WireGuard
// on 127.0.0.1, and connectors enrolled through that API, so that tests of
// the broker, the API, the CLI and the benchmarks share one harness.
//
// It needs a Postgres from postgres/pgtest: a test package using it calls
// pgtest.Main from its TestMain.
package brokertest

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
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/connector/httpsenroll"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// Logger discards, unless FIELDPASS_TEST_LOG is set: then it writes debug
// logs to stderr.
func Logger() *slog.Logger {
	if os.Getenv("FIELDPASS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// An Option changes how New sets up an Env.
type Option func(*options)

type options struct {
	broker func(*broker.Config)
	api    func(*Env, *apiserver.Config)
}

// WithBrokerConfig lets mod change the broker's configuration before the
// first start; every restart uses the changed configuration.
func WithBrokerConfig(mod func(*broker.Config)) Option {
	return func(o *options) { o.broker = mod }
}

// WithAPIConfig lets mod change the enrolment API's configuration. It runs
// once, after the first broker has started, so that it can use e.Broker and
// e.DB (to give the API a session manager, say); cleanups it registers run
// before the broker stops.
func WithAPIConfig(mod func(e *Env, cfg *apiserver.Config)) Option {
	return func(o *options) { o.api = mod }
}

// Env is one broker with its database and enrolment API, all in-process.
// By default the broker is configured as in the broker's own tests: ID
// "test-broker", presence every 200ms. New registers cleanups that stop it.
type Env struct {
	tb testing.TB

	// DB is a fresh database, DBURL its connection string.
	DB    *postgres.DB
	DBURL string
	// Key is the broker's private key, kept across restarts.
	Key wgnet.Key
	// Config is the broker's configuration; Port set, Start reuses it.
	Config broker.Config
	// Broker is the running broker, nil after Stop.
	Broker *broker.Broker
	// Port is the broker's WireGuard UDP port, kept across restarts.
	Port uint16
	// API serves the enrolment API; URL is its base URL.
	API *httptest.Server
	URL string

	api    func(*Env, *apiserver.Config)
	cancel context.CancelFunc
	done   chan error
}

// New starts a broker on a fresh database, and its enrolment API.
func New(tb testing.TB, opts ...Option) *Env {
	tb.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	url := pgtest.NewDatabase(tb)
	db, err := postgres.Open(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(db.Close)
	key, err := wgnet.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	e := &Env{tb: tb, DB: db, DBURL: url, Key: key, api: o.api}
	e.Config = broker.Config{
		ID:               "test-broker",
		PrivateKey:       key,
		WGListen:         netip.MustParseAddrPort("127.0.0.1:0"),
		PresenceInterval: 200 * time.Millisecond,
		Logger:           Logger(),
	}
	if o.broker != nil {
		o.broker(&e.Config)
	}
	useTUN(&e.Config)
	tb.Cleanup(func() {
		e.Stop()
		if e.API != nil {
			e.API.Close()
		}
	})
	e.Start()
	return e
}

// Endpoint is the broker's WireGuard UDP address.
func (e *Env) Endpoint() netip.AddrPort { return netip.AddrPortFrom(loopback, e.Port) }

// Start runs a broker; after a Stop it reuses the same key and UDP port, as
// a restarted broker process would. The enrolment API is made on the first
// start and kept.
func (e *Env) Start() {
	e.tb.Helper()
	cfg := e.Config
	if e.Port != 0 {
		cfg.WGListen = e.Endpoint()
	}
	b, err := broker.New(context.Background(), cfg, e.DB)
	if err != nil {
		e.tb.Fatal(err)
	}
	e.Broker, e.Port = b, b.ListenPort()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- b.Serve(ctx) }()
	if e.API == nil {
		acfg := apiserver.Config{
			DB: e.DB,
			Tunnel: apiserver.TunnelInfo{
				BrokerKey:     b.PublicKey().String(),
				BrokerAddress: b.Address(),
				Prefix:        b.Prefix(),
				Endpoints:     []string{e.Endpoint().String()},
				MTU:           b.MTU(),
			},
			EnrollRate:  1000,
			EnrollBurst: 1000,
			Logger:      Logger(),
		}
		if e.api != nil {
			e.api(e, &acfg)
		}
		e.API = httptest.NewServer(apiserver.New(acfg).Handler())
		e.URL = e.API.URL
	}
}

// Stop stops the broker and closes it; safe to call when stopped.
func (e *Env) Stop() {
	if e.Broker == nil {
		return
	}
	e.cancel()
	<-e.done
	e.Broker.Close()
	e.Broker = nil
}

// Enroll makes a token for name and enrols a connector through the API, as
// fieldpass-connector enroll does, into a temp state directory.
func (e *Env) Enroll(name string) *connector.State {
	e.tb.Helper()
	ctx := context.Background()
	tok, _, err := e.DB.CreateEnrollmentToken(ctx, name, nil, time.Hour)
	if err != nil {
		e.tb.Fatal(err)
	}
	s, err := httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: e.URL, Token: tok, StateDir: e.tb.TempDir() + "/state"})
	if err != nil {
		e.tb.Fatal(err)
	}
	return s
}

// TunnelEnrollConfig is what the enrol command printed for token carries:
// the broker's key and endpoint and the token's tunnel address, for
// connector.EnrollInTunnel, with a temp state directory.
func (e *Env) TunnelEnrollConfig(token string) connector.TunnelEnrollConfig {
	e.tb.Helper()
	p, err := e.DB.EnrollmentPeerOf(context.Background(), token)
	if err != nil || p == nil {
		e.tb.Fatalf("enrolment peer of the token: %+v, %v", p, err)
	}
	addr, err := tunnel.EnrollmentAddress(e.Broker.Prefix(), p.Seq)
	if err != nil {
		e.tb.Fatal(err)
	}
	return connector.TunnelEnrollConfig{
		Token:      token,
		BrokerKey:  e.Key.Public().String(),
		Endpoint:   e.Endpoint().String(),
		Address:    netip.PrefixFrom(addr, e.Broker.Prefix().Bits()),
		StateDir:   e.tb.TempDir() + "/state",
		ListenAddr: netip.MustParseAddrPort("127.0.0.1:0"),
		Timeout:    20 * time.Second,
	}
}

// EnrollInTunnel makes a token for name and enrols a connector inside
// WireGuard, as fieldpass-connector enroll --broker-key does.
func (e *Env) EnrollInTunnel(name string) *connector.State {
	e.tb.Helper()
	ctx := context.Background()
	tok, _, err := e.DB.CreateEnrollmentToken(ctx, name, nil, time.Hour)
	if err != nil {
		e.tb.Fatal(err)
	}
	s, err := connector.EnrollInTunnel(ctx, e.TunnelEnrollConfig(tok))
	if err != nil {
		e.tb.Fatal(err)
	}
	return s
}

// Connector is a running connector.
type Connector struct {
	*connector.Connector
	cfg    connector.Config
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// Stop ends Run and tears the tunnel down; safe to call twice. The
// connector says goodbye: the broker learns at once that it left.
func (c *Connector) Stop() {
	c.once.Do(func() {
		c.cancel()
		<-c.done
		c.Close()
	})
}

// Kill tears the tunnel down first, so that nothing the connector sends
// afterwards (its goodbye, a FIN) reaches the broker, as when its process
// is killed or its link is lost: the broker still holds its tunnel until
// silence or a new hello tells it otherwise. Safe to call twice, and
// after Stop.
func (c *Connector) Kill() {
	c.once.Do(func() {
		c.Close()
		c.cancel()
		<-c.done
	})
}

// Restart stops c (Kill if kill, else Stop) and starts a connector with
// the same state (the same key and tunnel address) and configuration, as
// a restarted connector process would; a cleanup stops it.
func (e *Env) Restart(c *Connector, kill bool) *Connector {
	e.tb.Helper()
	if kill {
		c.Kill()
	} else {
		c.Stop()
	}
	return e.StartAgain(c)
}

// StartAgain starts a connector with the state and configuration of c,
// which has stopped; a cleanup stops it.
func (e *Env) StartAgain(c *Connector) *Connector {
	e.tb.Helper()
	return e.startConnector(c.cfg)
}

// StartConnector runs a connector for state with the given services, its
// UDP socket on 127.0.0.1, backoff 100ms to 1s, a 5s dial timeout and no
// polling of local addresses; mod, if not nil, changes that configuration.
// A cleanup stops it.
func (e *Env) StartConnector(s *connector.State, services map[string]string, mod func(*connector.Config)) *Connector {
	e.tb.Helper()
	cfg := connector.Config{
		State:       s,
		Services:    services,
		ListenAddr:  netip.MustParseAddrPort("127.0.0.1:0"),
		MinBackoff:  100 * time.Millisecond,
		MaxBackoff:  time.Second,
		DialTimeout: 5 * time.Second,
		NetworkPoll: -1,
		Logger:      Logger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	return e.startConnector(cfg)
}

func (e *Env) startConnector(cfg connector.Config) *Connector {
	e.tb.Helper()
	cn, err := connector.New(cfg)
	if err != nil {
		e.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Connector{Connector: cn, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- cn.Run(ctx) }()
	e.tb.Cleanup(c.Stop)
	return c
}

// WaitFor polls cond every 20ms until it holds, and returns how long that
// took; after timeout it fails tb, naming what it waited for.
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
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

// Service starts a TCP service on loopback, as a device exposes, calling
// handle for each connection and closing the connection when handle
// returns; it returns the address. A cleanup stops it.
func Service(tb testing.TB, handle func(*net.TCPConn)) string {
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
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().String()
}

// Echo is a Service that echoes what it reads until EOF, and counts the
// connections it accepts: proof, for refusals, that nothing reached a
// device's service.
type Echo struct {
	Addr     string
	accepted atomic.Int64
}

// Accepted is the number of connections the service has accepted.
func (ce *Echo) Accepted() int64 { return ce.accepted.Load() }

// NewEcho starts an Echo; a cleanup stops it.
func NewEcho(tb testing.TB) *Echo {
	tb.Helper()
	ce := &Echo{}
	ce.Addr = Service(tb, func(c *net.TCPConn) {
		ce.accepted.Add(1)
		io.Copy(c, c)
		c.CloseWrite()
	})
	return ce
}

// EchoServer starts an echo service on loopback and returns its address.
func EchoServer(tb testing.TB) string {
	tb.Helper()
	return NewEcho(tb).Addr
}

// ClosedPort returns a loopback address where nothing listens.
func ClosedPort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// StartSessions runs a session manager on the running broker with cfg
// (Logger defaults to Logger()) until the test ends; it stops before the
// broker does. Call it from a WithAPIConfig function to give the API one.
func (e *Env) StartSessions(cfg broker.SessionsConfig) *broker.Sessions {
	e.tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	m, err := broker.NewSessions(context.Background(), e.Broker, e.DB, cfg)
	if err != nil {
		e.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	e.tb.Cleanup(func() { cancel(); <-done })
	return m
}
