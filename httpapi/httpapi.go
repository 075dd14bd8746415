// Package httpapi is the broker's JSON API over HTTP: its routes (all in
// routes.go), the handlers, and the mapping of the fieldpass error
// vocabulary to HTTP statuses. The connector's enrolment speaks it too, with
// the wire types of package tunnel so the connector needs nothing from here.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/tunnel"
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
	// AuthRate and AuthBurst limit authenticated API requests per client
	// address (default 50/s, burst 200).
	AuthRate  float64
	AuthBurst int
	// OIDC configures people's login; nil disables it (tokens issued with
	// fieldpass-broker user token still work).
	OIDC *OIDCConfig
	// PublicURL is the broker's own origin (https://broker.example.com):
	// login return addresses must be on it, and cookies are scoped to it.
	PublicURL string
	// MFALabels: connecting to a device carrying any of these labels
	// needs a login at which the IdP asserted multi-factor (amr/acr), even
	// when OIDC.Provider does not require it for everyone.
	MFALabels map[string]string
	// GrantLimits caps grant durations per role (zero: the defaults).
	GrantLimits fieldpass.GrantLimits
	// Sessions opens and ends recorded sessions to devices (the broker).
	Sessions Sessions
	// Alerts receives device_enrolled and vendor_grant_created (default
	// nil: alerts off).
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
	limiter   *limiter // enrolment and login: per client address
	authLimit *limiter // authenticated API calls: per client address
	login     *loginState
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, limiter: newLimiter(cfg.EnrollRate, cfg.EnrollBurst),
		authLimit: newLimiter(cfg.AuthRate, cfg.AuthBurst)}
	s.login = newLoginState(cfg)
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

// statusOf is the one table from error codes to HTTP statuses.
var statusOf = map[string]int{
	fieldpass.ECONFLICT:    http.StatusConflict,
	fieldpass.EFORBIDDEN:   http.StatusForbidden,
	fieldpass.EINTERNAL:    http.StatusInternalServerError,
	fieldpass.EINVALID:     http.StatusBadRequest,
	fieldpass.ENOTFOUND:    http.StatusNotFound,
	fieldpass.EUNAVAILABLE: http.StatusServiceUnavailable,
	fieldpass.EEXPIRED:     http.StatusGone,
}

// writeError answers with the error's code and message; internal errors are
// logged and shown as a generic message.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := fieldpass.ErrorCode(err)
	if code == fieldpass.EINTERNAL && postgres.Unavailable(err) {
		// An outage, not a bug: say so, and that it is worth retrying.
		s.log.Warn("request failed: database unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		err = fieldpass.Errorf(fieldpass.EUNAVAILABLE, "the broker's database is unavailable: no new sessions or changes until it is back; try again shortly")
		code = fieldpass.EUNAVAILABLE
	}
	if code == fieldpass.EINTERNAL {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	writeJSON(w, status, tunnel.ErrorResponse{Code: code, Message: fieldpass.ErrorMessage(err)})
}

func errorBody(code, message string) tunnel.ErrorResponse {
	return tunnel.ErrorResponse{Code: code, Message: message}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// decodeJSON reads one JSON object of at most max bytes, refusing unknown
// fields and trailing data.
func decodeJSON(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return fieldpass.Errorf(fieldpass.EINVALID, "want Content-Type application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fieldpass.Errorf(fieldpass.EINVALID, "request body larger than %d bytes", max)
		}
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid JSON body: %v", err)
	}
	if dec.More() {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid JSON body: trailing data")
	}
	return nil
}

// clientAddr is the peer address of the request (no proxy headers are
// trusted: a reverse proxy in front should be configured to preserve it).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
