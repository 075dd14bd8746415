// Package portal is the browser side of the broker: people's login through
// the identity provider (OIDC code flow, the portal cookie and its CSRF
// tokens), the approval page of the CLI's device login, and what each login
// asserted (MFA). Its handlers are mounted in apiserver's route table.
package portal

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/identity"
	"github.com/fieldpass/fieldpass/postgres"
)

// The portal login's cookie: HttpOnly, SameSite=Lax, host-only. Over https
// it is SecureSessionCookie, whose __Host- prefix makes browsers refuse it
// unless Secure, Path=/ and without Domain: no sibling or parent host (a
// device web UI on a subdomain, say) can set or shadow it. SessionCookie is
// its name on a plain-http loopback broker, where Secure cannot hold.
const (
	SessionCookie       = "fieldpass_session"
	SecureSessionCookie = "__Host-fieldpass_session"
)

// sessionCookieName is the login cookie's name on this portal.
func (p *Portal) sessionCookieName() string {
	if p.login.secure {
		return SecureSessionCookie
	}
	return SessionCookie
}

// SessionToken is the portal login token a request's cookie carries, "" if
// none: the API authenticates a browser's calls with it.
func (p *Portal) SessionToken(r *http.Request) string {
	if c, err := r.Cookie(p.sessionCookieName()); err == nil {
		return c.Value
	}
	return ""
}

// Config configures the Portal. Zero values mean the defaults.
type Config struct {
	DB *postgres.DB
	// Access applies the rules of what people may see and do; the pages
	// act only through it. Nil: the login flows alone (no pages).
	Access *access.Service
	// Sessions is the broker's session manager: device web UIs open
	// recorded sessions through it. Nil: no device web UIs.
	Sessions *broker.Sessions
	// WebDomain is the DNS domain under which each device service's web UI
	// gets an origin of its own, <device>--<service>.<WebDomain> (a wildcard
	// DNS name and certificate for *.<WebDomain> point at the broker), on
	// PublicURL's scheme and port. "localhost" works on a loopback broker:
	// browsers resolve *.localhost to it. Empty: no device web UIs.
	WebDomain string
	// WebHTTPS names the device web services ("device/service") that speak
	// HTTPS on the device's side, certificate unverified: field devices
	// mostly carry self-signed ones, so this is accepted only where an
	// operator said so, service by service. Others are spoken to in plain
	// HTTP over the (already encrypted) tunnel.
	WebHTTPS []string
	// RolesMaxAge: a portal login whose roles were read from the identity
	// provider longer ago than this must log in again, as the API demands
	// (fieldpass.User.RolesFresh; negative: never; zero: 24h).
	RolesMaxAge time.Duration
	// RecordInputLabels: terminals to devices carrying any of these labels
	// record keystrokes too (passwords typed included); others record only
	// output and resizes (default none).
	RecordInputLabels map[string]string
	// RecordingRetention is how long terminal recordings and device web
	// request logs are kept; RunRetention deletes older ones, audited.
	// Session rows and audit events are kept regardless. Zero: forever.
	RecordingRetention time.Duration
	// BrokerID names this broker as the actor of retention in the audit log.
	BrokerID string
	// OIDC configures people's login; nil disables it (tokens issued with
	// fieldpass-broker user token still work).
	OIDC *OIDCConfig
	// PublicURL is the broker's own origin (https://broker.example.com):
	// login return addresses must be on it, and cookies are scoped to it.
	PublicURL string
	// DownloadURL is where devices fetch the connector's packages and
	// binaries, for the install lines of the enrolment page. Empty: this
	// release's downloads (fieldpass.DownloadURL).
	DownloadURL string
	// EnrolCommand, when set, is the connector's enroll command inside
	// WireGuard for a new token (without --state-dir), for the enrolment
	// page; unset or failing, the page shows the HTTPS form.
	EnrolCommand func(ctx context.Context, token string) (string, error)
	Logger       *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// OIDCConfig configures people's login through an identity provider.
type OIDCConfig struct {
	// Provider is the relying party (identity.New). Required.
	Provider *identity.Provider
	// SessionTTL is how long a portal login lasts (default 12h).
	SessionTTL time.Duration
	// CLITokenTTL is how long a token from fieldpass login lasts (default
	// 12h, a portal login's length: fieldpass-broker serve --cli-token-ttl).
	CLITokenTTL time.Duration
	// CookieKey (32 bytes) encrypts the login-in-progress cookie. Default:
	// derived from the client secret (Provider.CookieKey), so that brokers
	// sharing the client share it; a public client gets a random key per
	// process, and a login must then finish at the broker that started it.
	CookieKey []byte
	// Rand is the source of states, nonces, PKCE verifiers and device
	// codes (default crypto/rand).
	Rand io.Reader
}

// Portal serves people's logins.
type Portal struct {
	cfg     Config
	log     *slog.Logger
	login   *loginState
	pages   pages
	web     *webProxy
	watches watches // live terminals
	csp     string  // the pages' Content-Security-Policy
}

// New returns a Portal.
func New(cfg Config) *Portal {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RolesMaxAge == 0 {
		cfg.RolesMaxAge = 24 * time.Hour
	}
	p := &Portal{cfg: cfg, log: cfg.Logger, login: newLoginState(cfg), pages: parsePages(), web: newWebProxy()}
	if p.login.origin == nil {
		p.cfg.WebDomain = "" // device origins live on the public URL's scheme and port
	}
	p.cfg.WebDomain = strings.ToLower(strings.Trim(p.cfg.WebDomain, "."))
	p.csp = p.pageCSP()
	return p
}

// writeError answers err as JSON (the API's error body). An unreachable
// database is said so; internal errors are logged and shown generically.
func (p *Portal) writeError(w http.ResponseWriter, r *http.Request, err error) {
	err = postgres.Explain(err)
	if fieldpass.ErrorCode(err) == fieldpass.EINTERNAL {
		p.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	httpapi.WriteError(w, err)
}
