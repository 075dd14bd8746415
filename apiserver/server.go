// Package apiserver serves the broker's HTTP front: the JSON API of package
// httpapi (its routes, all in routes.go, and handlers), the connect
// WebSocket that carries people's sessions, enrolment, health probes, and
// the portal's login routes mounted beside them. The connector's
// enrolment speaks it too, with the wire types of package tunnel so the
// connector needs nothing from here.
package apiserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/portal"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/ratelimit"
)

// TunnelInfo is what enrolment tells a new device about the broker.
type TunnelInfo struct {
	BrokerKey     string
	BrokerAddress netip.Addr
	Prefix        netip.Prefix
	Endpoints     []string
	MTU           int
}

// Config configures the Server. Zero values mean the defaults.
type Config struct {
	DB     *postgres.DB
	Tunnel TunnelInfo
	// EnrollRate and EnrollBurst limit enrolment attempts per client
	// address (default 1/s, burst 10): tokens are 256-bit, but a flood
	// still costs database round trips.
	EnrollRate  float64
	EnrollBurst int
	// AuthRate and AuthBurst limit authenticated API requests per user
	// (default 50/s, burst 200), and portal page requests per client
	// address: one person's script does not lock out everyone behind the
	// same proxy.
	AuthRate  float64
	AuthBurst int
	// AuthFailRate and AuthFailBurst limit failed authentication per client
	// address (default 1/s, burst 30), in a bucket of its own charged after
	// the token check: a flood of made-up tokens cannot starve valid ones.
	AuthFailRate  float64
	AuthFailBurst int
	// RolesMaxAge refuses the tokens of portal and CLI logins once the
	// user's roles were read from the identity provider longer ago than
	// this (default 24h): the person logs in again, and a role removed at
	// the provider is gone by then. Negative: off.
	RolesMaxAge time.Duration
	// TrustedProxies are the reverse proxies whose Forwarded or
	// X-Forwarded-For header names the client (ratelimit.Proxies); from
	// any other peer the headers are ignored (default none).
	TrustedProxies []netip.Prefix
	// Portal serves people's logins (OIDC, the CLI's device login) and
	// knows what each login asserted; nil: a portal with login off (tokens
	// issued with fieldpass-broker user token still work).
	Portal *portal.Portal
	// PublicURL is the broker's own origin (https://broker.example.com):
	// login return addresses must be on it, and cookies are scoped to it.
	PublicURL string
	// GrantLimits caps grant durations per role (zero: the defaults).
	GrantLimits fieldpass.GrantLimits
	// Access applies the rules of what people may see and do, shared with
	// the portal. Default: one made from DB, Sessions, Alerts, GrantLimits,
	// Logger and Now.
	Access *access.Service
	// Sessions opens and ends recorded sessions to devices (the broker).
	Sessions *broker.Sessions
	// MaxStreamsPerSession caps the streams one person's session carries
	// at once, each a connection the device opens to its service (default
	// 64): a grant is no licence to flood the device. Past it a new stream
	// is refused with a message naming the limit.
	MaxStreamsPerSession int
	// Alerts receives device_enrolled, vendor_grant_created, access_requested
	// and access_request_decided (default nil: alerts off).
	Alerts *alerts.Notifier
	// Ready reports why the broker cannot serve, or nil; /readyz answers
	// with it (default nil: ready whenever the process answers).
	Ready  func(context.Context) error
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server serves the API.
type Server struct {
	cfg       Config
	log       *slog.Logger
	limiter   *ratelimit.Keyed // enrolment and login: per client address
	authLimit *ratelimit.Keyed // authenticated API calls: per user
	authFail  *ratelimit.Keyed // failed authentication: per client address
	pageLimit *ratelimit.Keyed // portal pages: per client address
	proxies   *ratelimit.Proxies
	portal    *portal.Portal
	access    *access.Service
	handler   http.Handler
}

// New returns a Server; its Handler goes into an http.Server built by
// NewHTTPServer.
func New(cfg Config) *Server {
	if cfg.EnrollRate == 0 {
		cfg.EnrollRate = 1
	}
	if cfg.EnrollBurst == 0 {
		cfg.EnrollBurst = 10
	}
	if cfg.AuthRate == 0 {
		cfg.AuthRate = 50
	}
	if cfg.AuthBurst == 0 {
		cfg.AuthBurst = 200
	}
	if cfg.RolesMaxAge == 0 {
		cfg.RolesMaxAge = 24 * time.Hour
	}
	if cfg.AuthFailRate == 0 {
		cfg.AuthFailRate = 1
	}
	if cfg.AuthFailBurst == 0 {
		cfg.AuthFailBurst = 30
	}
	if cfg.MaxStreamsPerSession == 0 {
		cfg.MaxStreamsPerSession = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Access == nil {
		cfg.Access = access.New(access.Config{DB: cfg.DB, Sessions: cfg.Sessions, Alerts: cfg.Alerts,
			GrantLimits: cfg.GrantLimits, Logger: cfg.Logger, Now: cfg.Now})
	}
	if cfg.Portal == nil {
		cfg.Portal = portal.New(portal.Config{DB: cfg.DB, Access: cfg.Access, Sessions: cfg.Sessions, PublicURL: cfg.PublicURL,
			RolesMaxAge: cfg.RolesMaxAge, Logger: cfg.Logger, Now: cfg.Now})
	}
	s := &Server{cfg: cfg, log: cfg.Logger, limiter: ratelimit.New(cfg.EnrollRate, cfg.EnrollBurst),
		authLimit: ratelimit.New(cfg.AuthRate, cfg.AuthBurst), authFail: ratelimit.New(cfg.AuthFailRate, cfg.AuthFailBurst),
		pageLimit: ratelimit.New(cfg.AuthRate, cfg.AuthBurst), proxies: ratelimit.NewProxies(cfg.TrustedProxies),
		portal: cfg.Portal, access: cfg.Access}
	s.handler = s.routes()
	return s
}

// Handler is the API's root handler.
func (s *Server) Handler() http.Handler { return s.handler }

// NewHTTPServer wraps h with the limits every listener of ours has: a client
// that stalls its TLS handshake or headers, or sends an endless header,
// holds a connection for seconds, not forever.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second, // also bounds the TLS handshake
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// Serve serves h on ln until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, ln net.Listener, srv *http.Server) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// writeError answers err as an httpapi.ErrorResponse. An unreachable
// database is said so; internal errors are logged and shown as a generic
// message.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if e := postgres.Explain(err); e != err {
		s.log.Warn("request failed: database unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		err = e
	}
	if fieldpass.ErrorCode(err) == fieldpass.EINTERNAL {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	httpapi.WriteError(w, err)
}

func errorBody(code, message string) httpapi.ErrorResponse {
	return httpapi.ErrorResponse{Code: code, Message: message}
}

func writeJSON(w http.ResponseWriter, status int, v any) { httpapi.WriteJSON(w, status, v) }

func decodeJSON(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	return httpapi.DecodeJSON(w, r, max, v)
}
