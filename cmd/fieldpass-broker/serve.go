package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/cmd/internal/cliflag"
	"github.com/fieldpass/fieldpass/metrics"
	"github.com/fieldpass/fieldpass/portal"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/ratelimit"
	"github.com/fieldpass/fieldpass/wgnet"
)

func defaultKeyFile(getenv func(string) string) string {
	if d := getenv("STATE_DIRECTORY"); d != "" { // systemd StateDirectory=
		return filepath.Join(strings.Split(d, ":")[0], "broker.key")
	}
	return "/var/lib/fieldpass-broker/broker.key"
}

func (e env) serve(ctx context.Context, args []string) error {
	cfg, err := e.serveFlags(ctx, args)
	if err != nil {
		return err
	}
	srv, err := newServer(ctx, cfg)
	if err != nil {
		return err
	}
	defer srv.close()
	return srv.run(ctx)
}

// serveConfig is serve's command line, checked, with the secrets it names
// read: what newServer builds the broker from.
type serveConfig struct {
	log                       *slog.Logger
	dbURL                     string
	requireSeparateRole       bool
	httpListen, metricsListen string
	tls                       *tlsFlags // HTTPS from files or ACME, if on
	publicURL                 *url.URL
	// endpoints are told to devices; none means the public URL's host
	// and the WireGuard port.
	endpoints           []string
	prefix              netip.Prefix
	wgListen            netip.AddrPort
	mtu                 int
	keyFile             string
	initKey             bool // --init: create keyFile if it is missing
	brokerID            string
	handshakeResetAfter time.Duration
	nudgeRate           int
	idleTimeout         time.Duration
	auditGrace          time.Duration
	reconnectWait       time.Duration // 0: sessions end with their device's tunnel
	mfaLabels           labelFlag
	sensitiveLabels     labelFlag
	enrollRate          float64
	enrollBurst         int
	oidc                *portal.OIDCConfig // nil: no login
	alerts              *alerts.Config     // nil: alerts off
	alertOfflineAfter   time.Duration
	fourEyes            access.FourEyes
	checkpointKey       string // "": no checkpoints
	checkpointEvery     time.Duration
	webDomain           string // "": no device web UIs
	downloadURL         string // "": this release's downloads
	recordingRetention  time.Duration
	recordInputLabels   labelFlag
	webHTTPS            []string
	harden              *hardenFlags // issue 10's limits (serve_harden.go)
	fleet               fleetFlags   // several brokers, one database (serve_fleet.go)
	gcPercent           string       // the garbage collector target in effect (serve_gc.go)
	peerAddr            string       // with a fleet: where the others reach this broker
	tun                 string       // "": the userspace network stack (serve_tun.go)
}

// serveFlags parses and checks serve's flags, reads the secrets they name
// and reaches for the identity provider once (oidcFlags.config).
func (e env) serveFlags(ctx context.Context, args []string) (*serveConfig, error) {
	fset := e.flagSet("serve", "serve --database-url URL --http-listen ADDR --wg-listen UDPADDR --public-url URL [flags]")
	config := fset.String("config", "", "config `FILE` with one flag per line (`name = value`, # comments), as the connector's; command-line flags win")
	dbURL := e.databaseFlag(fset)
	httpListen := fset.String("http-listen", "127.0.0.1:8080", "TCP address of the API and enrolment endpoint")
	metricsListen := fset.String("metrics-listen", "", "TCP `address` of Prometheus /metrics, /healthz and /readyz, kept off the API listener (default: off)")
	wgListen := fset.String("wg-listen", ":51820", "UDP address of WireGuard (a specific IP binds only that address)")
	publicURL := fset.String("public-url", "", "URL people and connectors use to reach this broker (https://...)")
	recordingRetention := fset.Duration("recording-retention", 0, "keep terminal recordings and device web request logs this `long` (e.g. 2160h), deleting older ones hourly, audited; session rows and audit events are always kept (default: forever)")
	recordInputLabels := labelFlag{}
	fset.Var(recordInputLabels, "record-input-label", "record terminal keystrokes too (passwords typed included) on devices with label `k=v` (repeatable; default: output only)")
	var webHTTPS cliflag.Strings
	fset.Var(&webHTTPS, "web-https", "`DEVICE/SERVICE` whose web UI speaks HTTPS on the device's side with a certificate accepted unverified (self-signed, as field devices have); repeatable; others are spoken to in plain HTTP inside the tunnel")
	webDomain := fset.String("web-domain", "", "DNS `domain` under which each device service's web UI gets its own origin, DEVICE--SERVICE.DOMAIN (wildcard DNS and certificate for *.DOMAIN point here) (default: localhost for a loopback --public-url, else off)")
	downloadURL := fset.String("download-url", e.getenv("FIELDPASS_DOWNLOAD_URL"), "`URL` devices fetch the connector's packages from, for the enrolment page's install lines (env FIELDPASS_DOWNLOAD_URL; default: this release's downloads)")
	var endpoints cliflag.Strings
	fset.Var(&endpoints, "wg-endpoint", "public WireGuard `host:port` told to devices (repeatable; default: the public URL's host and the --wg-listen port)")
	prefix := fset.String("tunnel-prefix", "10.77.0.0/16", "tunnel address space; the broker takes the first address")
	mtu := fset.Int("mtu", 1280, "tunnel MTU (1280 is safe on APNs that forbid fragmentation)")
	keyFile := fset.String("key-file", defaultKeyFile(e.getenv), "broker WireGuard private key, which every enrolled device pins (back it up); created (0600) only by --init")
	initKey := fset.Bool("init", false, "create the --key-file if it is missing (first start of a new broker); without it a missing key is an error, so that a mistyped path or a lost volume never silently becomes a new key")
	brokerID := fset.String("broker-id", "", "name of this broker in device presence (default: host name)")
	tlsf := addTLSFlags(fset, e.getenv)
	logLevel := fset.String("log-level", "info", "debug, info, warn or error")
	logFormat := fset.String("log-format", "text", "text or json")
	mfaLabels := labelFlag{}
	fset.Var(mfaLabels, "require-mfa-label", "connecting to devices with label `k=v` needs a multi-factor login (repeatable)")
	checkpointKey := fset.String("checkpoint-key", "", "ed25519 key (created 0600 if missing) with which the broker signs audit chain checkpoints")
	checkpointEvery := fset.Duration("checkpoint-every", time.Hour, "how often to sign a checkpoint of the audit chain (with --checkpoint-key)")
	enrollRate := fset.Float64("enroll-rate", 1, "enrolment attempts per second per client address (a factory line behind one NAT may need more)")
	enrollBurst := fset.Int("enroll-burst", 10, "enrolment attempts a client address may make at once")
	idleTimeout := fset.Duration("session-idle-timeout", 0, "end sessions that carried no byte either way for this long (0: off)")
	auditGrace := fset.Duration("audit-grace", 60*time.Second, "how long live sessions go on while Postgres is unreachable before they end (audit_unavailable)")
	reconnectWait := fset.Duration("session-reconnect-wait", 2*time.Minute, "how long a session waits for its device when the device's tunnel drops (roaming, a connector restart): the connections in flight end, the session goes on, and ends device_closed only if the device is not back in time (0: sessions end with the tunnel)")
	handshakeResetAfter := fset.Duration("handshake-reset-after", 3*time.Minute, "forget a device's WireGuard handshake state once it has been silent this long (10s to 24h), "+
		"so a device whose clock went backwards (reboot without RTC) is let in again: WireGuard refuses handshakes older than the last it accepted. "+
		"The default is WireGuard's reject-after time, past which no session key is left to lose")
	nudgeRate := fset.Int("nudge-rate", 50, "after a restart, and for this broker's share of a stopped or dead fleet broker's devices, call back this many devices a second (1 to 10000), "+
		"without every device handshaking at once; a larger fleet is called back faster, so that all are called within about 45 s (at most 1000 a second)")
	fourEyes := fset.String("four-eyes", "self", "who must be a second person: self (nobody grants themselves access) or all (every grant only by approving another person's request)")
	requireSeparateRole := fset.Bool("require-separate-role", false, "refuse to start if the database role is a superuser or owns the audit tables (see migrate --grant-to)")
	webhook := addAlertWebhookFlags(fset)
	alertOfflineAfter := fset.Duration("alert-offline-after", 10*time.Minute, "alert when a device stays offline this long (once per offline episode)")
	sensitiveLabels := labelFlag{}
	fset.Var(sensitiveLabels, "alert-sensitive-label", "alert when a session starts on a device with label `k=v` (repeatable)")
	oidcf := addOIDCFlags(fset)
	harden := addHardenFlags(fset)
	fleetf := addFleetFlags(fset)
	tun := addTUNFlag(fset)
	gcPct := fset.Int("gc-percent", defaultGCPercent, "garbage collector target: the heap grows by this `percent` of the live heap before a collection (5 to 1000; Go's default is 100); lower keeps memory nearer the devices' live state, at the CPU of more frequent collections. GOGC, if set, wins over the default")
	if err := parse(fset, args, 0); err != nil {
		return nil, err
	}
	if *config != "" {
		if _, err := os.Stat(*config); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := cliflag.ApplyFile(fset, *config); err != nil {
			return nil, usageError{Msg: err.Error()}
		}
	}
	if err := harden.check(); err != nil {
		return nil, err
	}
	if err := checkTUNName(*tun); err != nil {
		return nil, err
	}
	gcExplicit := false
	fset.Visit(func(f *flag.Flag) { gcExplicit = gcExplicit || f.Name == "gc-percent" })
	gcInEffect, err := gcPercent(*gcPct, gcExplicit, e.getenv("GOGC"))
	if err != nil {
		return nil, usageError{Msg: "--gc-percent " + err.Error()}
	}
	cfg := &serveConfig{
		httpListen: *httpListen, metricsListen: *metricsListen, tls: tlsf,
		endpoints: endpoints, mtu: *mtu, keyFile: *keyFile, initKey: *initKey, brokerID: *brokerID,
		handshakeResetAfter: *handshakeResetAfter, nudgeRate: *nudgeRate, idleTimeout: *idleTimeout, auditGrace: *auditGrace,
		mfaLabels: mfaLabels, sensitiveLabels: sensitiveLabels, enrollRate: *enrollRate, enrollBurst: *enrollBurst,
		alertOfflineAfter: *alertOfflineAfter, checkpointKey: *checkpointKey, checkpointEvery: *checkpointEvery,
		requireSeparateRole: *requireSeparateRole, harden: harden, fleet: fleetf, reconnectWait: *reconnectWait,
		tun:       *tun,
		gcPercent: gcInEffect,
	}
	if cfg.log, err = newLogger(e.stderr, *logLevel, *logFormat); err != nil {
		return nil, err
	}
	if cfg.fourEyes, err = access.ParseFourEyes(*fourEyes); err != nil {
		return nil, usageError{Msg: "--four-eyes: " + fieldpass.ErrorMessage(err)}
	}
	if *publicURL == "" {
		return nil, usageError{Msg: "--public-url is required: the https:// URL devices and people reach this broker at"}
	}
	pu, err := publicURLFlag(*publicURL)
	if err != nil {
		return nil, usageError{Msg: err.Error()}
	}
	cfg.publicURL = pu
	cfg.webDomain = strings.ToLower(strings.Trim(*webDomain, "."))
	cfg.downloadURL = *downloadURL
	cfg.recordingRetention, cfg.recordInputLabels = *recordingRetention, recordInputLabels
	for _, ds := range webHTTPS {
		d, svc, ok := strings.Cut(ds, "/")
		if !ok || fieldpass.ValidateDeviceName(d) != nil || fieldpass.ValidateServiceName(svc) != nil {
			return nil, usageError{Msg: fmt.Sprintf("--web-https %q: want DEVICE/SERVICE, e.g. router-1/web", ds)}
		}
		cfg.webHTTPS = append(cfg.webHTTPS, ds)
	}
	if cfg.recordingRetention < 0 || cfg.recordingRetention > 0 && cfg.recordingRetention < time.Hour {
		return nil, usageError{Msg: "--recording-retention: want at least 1h (or 0: forever)"}
	}
	if cfg.webDomain == "" && fieldpass.IsLoopbackHost(pu.Hostname()) {
		cfg.webDomain = "localhost" // browsers resolve *.localhost to this machine
	}
	if strings.ContainsAny(cfg.webDomain, "/:@ ") {
		return nil, usageError{Msg: fmt.Sprintf("--web-domain %q: want a DNS name such as devices.example.com", *webDomain)}
	}
	if cfg.oidc, err = oidcf.config(ctx, pu, cfg.log); err != nil {
		return nil, err
	}
	if cfg.prefix, err = netip.ParsePrefix(*prefix); err != nil || cfg.prefix.Bits() > 30 {
		return nil, usageError{Msg: fmt.Sprintf("--tunnel-prefix %q: want a CIDR prefix like 10.77.0.0/16", *prefix)}
	}
	if cfg.wgListen, err = parseUDPListen(*wgListen); err != nil {
		return nil, usageError{Msg: fmt.Sprintf("--wg-listen: %v", err)}
	}
	if *idleTimeout < 0 || *auditGrace <= 0 || *reconnectWait < 0 {
		return nil, usageError{Msg: "--session-idle-timeout, --audit-grace and --session-reconnect-wait: want positive durations like 30m or 60s"}
	}
	if *nudgeRate < 1 || *nudgeRate > 10000 {
		return nil, usageError{Msg: fmt.Sprintf("--nudge-rate %d: want 1 to 10000 devices a second (default 50)", *nudgeRate)}
	}
	if *handshakeResetAfter < 10*time.Second || *handshakeResetAfter > 24*time.Hour {
		return nil, usageError{Msg: fmt.Sprintf("--handshake-reset-after %s: want 10s to 24h (default 3m)", *handshakeResetAfter)}
	}
	if *checkpointKey != "" && *checkpointEvery < time.Minute {
		return nil, usageError{Msg: "--checkpoint-every must be at least 1m"}
	}
	if *enrollRate <= 0 || *enrollBurst < 1 {
		return nil, usageError{Msg: "--enroll-rate must be positive and --enroll-burst at least 1"}
	}
	if err := tlsf.check(pu.Hostname()); err != nil {
		return nil, err
	}
	if cfg.peerAddr, err = fleetf.check(); err != nil {
		return nil, err
	}
	if cfg.alerts, err = alertConfig(webhook, *alertOfflineAfter, len(sensitiveLabels) > 0, cfg.log); err != nil {
		return nil, err
	}
	if cfg.dbURL, err = e.databaseURL(*dbURL); err != nil {
		return nil, err
	}
	return cfg, nil
}

// server is the broker's object graph, built and listening, not yet
// serving.
type server struct {
	cfg           *serveConfig
	log           *slog.Logger
	db            *postgres.DB
	broker        *broker.Broker
	sessions      *broker.Sessions
	portal        *portal.Portal
	httpLn, opsLn net.Listener // opsLn nil: no --metrics-listen
	http, ops     *http.Server
	endpoints     []string
	checkpointKey ed25519.PrivateKey // nil: no checkpoints
	fleet         *fleet             // nil: this broker works alone
	closers       []func()           // run by close, last first
}

// newServer opens the database, builds the broker and its API and listens.
// On error it closes what it had opened.
func newServer(ctx context.Context, cfg *serveConfig) (_ *server, err error) {
	s := &server{cfg: cfg, log: cfg.log}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	log := cfg.log
	key, created, err := loadOrCreateKey(cfg.keyFile, cfg.initKey)
	if err != nil {
		return nil, err
	}
	// Say where the key lives: it is the one file whose loss means
	// re-enrolling every device.
	if created {
		log.Warn("created the broker's WireGuard key: every device enrolled from now on pins it; back it up",
			"key_file", cfg.keyFile, "public_key", key.Public().String())
	} else {
		log.Info("broker WireGuard key", "key_file", cfg.keyFile, "public_key", key.Public().String())
	}
	db, err := postgres.Open(ctx, cfg.dbURL)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.closers = append(s.closers, db.Close)
	if err := checkRole(ctx, db, cfg.requireSeparateRole, log); err != nil {
		return nil, err
	}

	// Metrics are recorded only when someone can scrape them.
	var reg *prometheus.Registry
	var bm *metrics.Broker
	if cfg.metricsListen != "" {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		bm = metrics.NewBroker(reg)
	}
	notifier, err := s.startAlerts(ctx, bm)
	if err != nil {
		return nil, err
	}
	var fleetCfg *broker.FleetConfig
	var linkTLS *tls.Config
	if cfg.fleet.on() {
		if fleetCfg, linkTLS, err = s.fleetConfig(cfg.fleet, cfg.peerAddr); err != nil {
			return nil, err
		}
	}
	b, err := broker.New(ctx, broker.Config{
		Fleet:             fleetCfg,
		ID:                cfg.brokerID,
		PrivateKey:        key,
		Prefix:            cfg.prefix,
		WGListen:          cfg.wgListen,
		MTU:               cfg.mtu,
		Metrics:           bm,
		Alerts:            notifier,
		OfflineAlertAfter: cfg.alertOfflineAfter,
		ResetAfter:        cfg.handshakeResetAfter,
		NudgeRate:         cfg.nudgeRate,
		Logger:            log,
		NewNetwork:        tunNetwork(cfg.tun, cfg.prefix),
	}, db)
	if err != nil {
		return nil, err
	}
	s.broker = b
	if cfg.tun != "" {
		log.Info("WireGuard on a kernel TUN interface", "interface", cfg.tun, "address", b.Address())
	}
	s.closers = append(s.closers, func() { b.Close() })
	sessions, err := broker.NewSessions(ctx, b, db, broker.SessionsConfig{
		IdleTimeout: cfg.idleTimeout, AuditGrace: cfg.auditGrace, ReconnectWait: reconnectWait(cfg.reconnectWait), Metrics: bm,
		Alerts: notifier, SensitiveLabels: cfg.sensitiveLabels, MFALabels: cfg.mfaLabels, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	s.sessions = sessions
	if cfg.fleet.on() {
		if s.fleet, err = s.startFleet(cfg.fleet, cfg.peerAddr, linkTLS); err != nil {
			return nil, err
		}
	}
	endpoints := cfg.endpoints
	if len(endpoints) == 0 {
		endpoints = []string{net.JoinHostPort(cfg.publicURL.Hostname(), strconv.Itoa(int(b.ListenPort())))}
	}
	s.endpoints = endpoints
	b.SetEnrollEndpoints(endpoints)
	publicOrigin := cfg.publicURL.Scheme + "://" + cfg.publicURL.Host
	// One set of rules for what people may see and do, whether they ask
	// through the API or the portal.
	rules := access.New(access.Config{DB: db, Sessions: sessions, Alerts: notifier, FourEyes: cfg.fourEyes, Logger: log})
	s.portal = portal.New(portal.Config{DB: db, Access: rules, Sessions: sessions, WebDomain: cfg.webDomain,
		RecordInputLabels: cfg.recordInputLabels, RecordingRetention: cfg.recordingRetention, BrokerID: b.ID(), WebHTTPS: cfg.webHTTPS,
		RolesMaxAge: cfg.harden.apiRolesMaxAge(),
		OIDC:        cfg.oidc, PublicURL: publicOrigin, Logger: log,
		DownloadURL: cfg.downloadURL,
		EnrolCommand: func(ctx context.Context, token string) (string, error) {
			p, err := db.EnrollmentPeerOf(ctx, token)
			if err != nil || p == nil {
				return "", fmt.Errorf("no enrolment peer for the token: %v", err)
			}
			return enrolCommand(token, b.PublicKey(), endpoints[0], cfg.prefix, p.Seq)
		}})
	api := apiserver.New(apiserver.Config{
		DB: db,
		Tunnel: apiserver.TunnelInfo{
			BrokerKey:     b.PublicKey().String(),
			BrokerAddress: b.Address(),
			Prefix:        cfg.prefix,
			Endpoints:     endpoints,
			MTU:           cfg.mtu,
		},
		Portal:      s.portal,
		Access:      rules,
		PublicURL:   publicOrigin,
		Sessions:    sessions,
		Alerts:      notifier,
		Ready:       b.Ready,
		EnrollRate:  cfg.enrollRate,
		EnrollBurst: cfg.enrollBurst,
		Logger:      log,

		MaxStreamsPerSession: *cfg.harden.maxStreamsPerSession,
		TrustedProxies:       cfg.harden.trustedProxies,
		RolesMaxAge:          cfg.harden.apiRolesMaxAge(),
	})
	s.http = apiserver.NewHTTPServer(api.Handler(), log)
	if cfg.metricsListen != "" {
		s.ops = apiserver.NewHTTPServer(apiserver.OpsRoutes(metrics.Handler(reg), b.Ready), log)
	}

	if err := s.listen(); err != nil {
		return nil, err
	}
	if cfg.checkpointKey != "" {
		if s.checkpointKey, err = loadOrCreateCheckpointKey(cfg.checkpointKey); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// listen listens for the API and, with --metrics-listen, for the metrics:
// before serving, so that a port taken is an error at start.
func (s *server) listen() error {
	cfg := s.cfg
	var err error
	if s.httpLn, err = net.Listen("tcp", cfg.httpListen); err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.httpListen, err)
	}
	if *cfg.harden.proxyProtocol {
		// Before TLS: the balancer's header comes first on the wire.
		if s.httpLn, err = ratelimit.ProxyProtocol(s.httpLn, cfg.harden.trustedProxies); err != nil {
			return err
		}
	}
	if cfg.tls.on() {
		tlsCfg, err := cfg.tls.newTLSConfig(s.log)
		if err != nil {
			s.httpLn.Close()
			return err
		}
		s.httpLn = newTLSListener(s.httpLn, s.http, tlsCfg)
	} else {
		plainHTTPWarning(s.httpLn, s.log)
	}
	if s.ops != nil {
		if s.opsLn, err = net.Listen("tcp", cfg.metricsListen); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.metricsListen, err)
		}
		s.closers = append(s.closers, func() { s.opsLn.Close() })
		s.log.Info("metrics serving", "addr", s.opsLn.Addr().String())
	}
	return nil
}

// startAlerts starts the notifier, if alerts are on (nil if not). Alerts
// outlive the broker's other loops (close stops them after the broker), so
// that those raised while stopping are queued and then dead-lettered.
func (s *server) startAlerts(ctx context.Context, bm *metrics.Broker) (*alerts.Notifier, error) {
	cfg := s.cfg.alerts
	if cfg == nil {
		return nil, nil
	}
	cfg.DeadLetters = s.db
	if s.cfg.fleet.on() {
		cfg.Claims = s.db // one alert per event across the fleet
	}
	cfg.Metrics = bm
	cfg.Logger = s.log.With("component", "alerts")
	notifier, err := alerts.New(*cfg)
	if err != nil {
		return nil, err
	}
	alertCtx, stopAlerts := context.WithCancel(context.WithoutCancel(ctx))
	alertsDone := make(chan struct{})
	go func() { defer close(alertsDone); notifier.Run(alertCtx) }()
	s.closers = append(s.closers, func() { stopAlerts(); <-alertsDone })
	s.log.Info("alerts on", "webhook", alerts.Redact(cfg.URL), "offline_after", fieldpass.FormatDuration(s.cfg.alertOfflineAfter))
	return notifier, nil
}

// run serves until ctx ends or a loop fails, then stops them all.
func (s *server) run(ctx context.Context) error {
	b := s.broker
	s.log.Info("broker serving", "version", fieldpass.Version, "http", s.httpLn.Addr().String(), "wireguard_port", b.ListenPort(),
		"public_url", s.cfg.publicURL.String(), "endpoints", strings.Join(s.endpoints, ","), "tunnel_address", b.Address(), "public_key", b.PublicKey().String(),
		"gc_percent", s.cfg.gcPercent)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	// Jobs of the whole fleet run in one broker at a time.
	lead := func(job string, fn func(context.Context)) {
		if s.fleet == nil {
			fn(ctx)
			return
		}
		s.db.Lead(ctx, job, 5*time.Second, fn)
	}
	if s.checkpointKey != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lead("audit-checkpoint", func(ctx context.Context) {
				checkpointLoop(ctx, s.db, s.checkpointKey, s.cfg.checkpointEvery, s.log)
			})
		}()
	}
	wg.Add(2)
	go func() { defer wg.Done(); s.portal.RunWebLog(ctx) }()
	go func() { defer wg.Done(); lead("retention", s.portal.RunRetention) }()
	errc := make(chan error, 5)
	if s.fleet != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- s.fleet.server.Serve(ctx, s.fleet.ln) }()
	}
	wg.Add(3)
	go func() { defer wg.Done(); errc <- apiserver.Serve(ctx, s.httpLn, s.http) }()
	if s.opsLn != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- apiserver.Serve(ctx, s.opsLn, s.ops) }()
	}
	go func() { defer wg.Done(); errc <- b.Serve(ctx) }()
	go func() { defer wg.Done(); errc <- s.sessions.Run(ctx) }()
	err := <-errc
	cancel()
	wg.Wait()
	if ctx.Err() != nil && err == nil {
		s.log.Info("broker stopped")
	}
	return err
}

// close releases what newServer opened, last first: the broker before the
// alerts it may still raise, the database last.
func (s *server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// checkRole warns, or with require refuses, when the broker's database role
// could alter the audit tables. It only warns by default: the demo and the
// tests run everything as one role.
func checkRole(ctx context.Context, db *postgres.DB, require bool, log *slog.Logger) error {
	can, err := db.CanAlterAudit(ctx)
	if err != nil {
		return err
	}
	if !can {
		return nil
	}
	const risk = "the database role serve connects as is a superuser or owns the audit tables: " +
		"whoever holds its credentials can disable the audit triggers and rewrite the audit log"
	const fix = "run serve as a role of its own: CREATE ROLE fieldpass_broker LOGIN PASSWORD '...', " +
		"then, as the owner, fieldpass-broker migrate --grant-to fieldpass_broker, and give serve that role's URL"
	if require {
		return fmt.Errorf("--require-separate-role: %s; %s", risk, fix)
	}
	log.Warn(risk, "fix", fix)
	return nil
}

func parseUDPListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", port)
	}
	if host == "" {
		return netip.AddrPortFrom(netip.Addr{}, uint16(p)), nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("want IP:port, got %q", s)
	}
	if a.IsUnspecified() {
		return netip.AddrPortFrom(netip.Addr{}, uint16(p)), nil
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// loadOrCreateKey reads the broker's WireGuard key; with create (serve
// --init) it creates a missing one. Every enrolled device pins the public
// half, so losing the file means re-enrolling the fleet: a missing key is
// an error unless creating one was asked for, lest a mistyped --key-file or
// an unmounted volume quietly cut off every device. created reports a new
// key.
func loadOrCreateKey(path string, create bool) (k wgnet.Key, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := wgnet.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return k, false, fmt.Errorf("key file %s: %w", path, err)
		}
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return wgnet.Key{}, false, fmt.Errorf("read key file: %w", err)
	}
	if !create {
		return wgnet.Key{}, false, fieldpass.Errorf(fieldpass.ENOTFOUND,
			"the broker's WireGuard key %s does not exist. On a new broker, create it by starting once with "+
				"\"fieldpass-broker serve --init --key-file %s ...\"; otherwise give --key-file the path of the existing key, "+
				"which every enrolled device pins", path, path)
	}
	k, err = wgnet.GenerateKey(rand.Reader)
	if err != nil {
		return k, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return k, false, fmt.Errorf("create key dir for %s: %w (give --key-file)", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return k, false, fmt.Errorf("create key file: %w", err)
	}
	if _, err := f.WriteString(k.String() + "\n"); err != nil {
		f.Close()
		return k, false, fmt.Errorf("write key file: %w", err)
	}
	return k, true, f.Close()
}

// checkpointLoop signs the newest audit event now and then: a chain kept
// only in the database could be rewritten whole, but not under signatures
// that were exported before (fieldpass-broker audit export).
func checkpointLoop(ctx context.Context, db *postgres.DB, key ed25519.PrivateKey, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		cp, err := db.CheckpointAudit(ctx, key)
		switch {
		case err == nil:
			log.Info("audit checkpoint signed", "seq", cp.Seq)
		case ctx.Err() != nil:
			return
		case fieldpass.ErrorCode(err) == fieldpass.ENOTFOUND || fieldpass.ErrorCode(err) == fieldpass.ECONFLICT:
			log.Debug("audit checkpoint skipped", "reason", fieldpass.ErrorMessage(err))
		default:
			log.Error("audit checkpoint", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// alertWebhookFlags name the webhook and the file of its secret: serve
// delivers alerts to it, alerts replay re-delivers dead letters.
type alertWebhookFlags struct{ url, secretFile *string }

func addAlertWebhookFlags(fs *flag.FlagSet) alertWebhookFlags {
	return alertWebhookFlags{
		url:        fs.String("alert-webhook", "", "`URL` to POST signed JSON alerts to: https, or http to loopback only (serve: none turns alerts off)"),
		secretFile: fs.String("alert-secret-file", "", "`file` holding the shared secret that signs alerts (HMAC-SHA256; at least 16 bytes)"),
	}
}

// config checks the webhook flags and reads the secret; nil means no
// --alert-webhook. The secret comes from a file, never the command line,
// where any local user could read it in the process list.
func (f alertWebhookFlags) config(log *slog.Logger) (*alerts.Config, error) {
	if *f.url == "" {
		if *f.secretFile != "" {
			return nil, usageError{Msg: "--alert-secret-file needs --alert-webhook"}
		}
		return nil, nil
	}
	if err := alerts.CheckURL(*f.url); err != nil {
		return nil, usageError{Msg: "--alert-webhook: " + err.Error()}
	}
	if *f.secretFile == "" {
		return nil, usageError{Msg: "--alert-webhook needs --alert-secret-file: the file holding the secret that signs alerts"}
	}
	fi, err := os.Stat(*f.secretFile)
	if err != nil {
		return nil, fmt.Errorf("alert secret: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("alert secret file is readable by group or others; chmod 600 it", "file", *f.secretFile)
	}
	raw, err := os.ReadFile(*f.secretFile)
	if err != nil {
		return nil, fmt.Errorf("alert secret: %w", err)
	}
	secret := bytes.TrimSpace(raw)
	if len(secret) < 16 {
		return nil, fmt.Errorf("alert secret in %s: want at least 16 bytes (openssl rand -hex 32)", *f.secretFile)
	}
	return &alerts.Config{URL: *f.url, Secret: secret}, nil
}

// alertConfig checks serve's alert flags and reads the secret; nil means
// alerts are off (no --alert-webhook).
func alertConfig(webhook alertWebhookFlags, offlineAfter time.Duration, sensitive bool, log *slog.Logger) (*alerts.Config, error) {
	if *webhook.url == "" && (*webhook.secretFile != "" || sensitive) {
		return nil, usageError{Msg: "--alert-secret-file and --alert-sensitive-label need --alert-webhook"}
	}
	if *webhook.url != "" && offlineAfter < time.Minute {
		return nil, usageError{Msg: "--alert-offline-after must be at least 1m"}
	}
	return webhook.config(log)
}

// publicURLFlag checks --public-url as the connectors and the CLI will:
// they refuse plain http to anything but a loopback broker, so a broker
// started with one would be unreachable. A path is refused too: the API,
// the portal and enrolment are served at the root, and a path would be
// dropped without a word.
func publicURLFlag(raw string) (*url.URL, error) {
	u, err := fieldpass.ParseBrokerURL(raw)
	if err != nil {
		return nil, fmt.Errorf("--public-url: %s", fieldpass.ErrorMessage(err))
	}
	if u.Path != "" {
		return nil, fmt.Errorf("--public-url %s has a path (%s): the broker is served at the root of its host; give https://host[:port] and route it there", u.Redacted(), u.Path)
	}
	return u, nil
}

// reconnectWait maps --session-reconnect-wait to SessionsConfig: 0 there
// means the default, here no wait.
func reconnectWait(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
