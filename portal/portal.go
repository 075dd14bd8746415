// Package portal is the browser side of the broker: people's login through
// the identity provider (OIDC code flow, the portal cookie and its CSRF
// tokens), the approval page of the CLI's device login, and what each login
// asserted (MFA). Its handlers are mounted in apiserver's route table.
package portal

import (
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/identity"
	"github.com/fieldpass/fieldpass/postgres"
)

// SessionCookie carries a portal login: Secure, HttpOnly, SameSite=Lax.
const SessionCookie = "fieldpass_session"

// Config configures the Portal. Zero values mean the defaults.
type Config struct {
	DB *postgres.DB
	// Access applies the rules of what people may see and do; the pages
	// act only through it. Nil: the login flows alone (no pages).
	Access *access.Service
	// OIDC configures people's login; nil disables it (tokens issued with
	// fieldpass-broker user token still work).
	OIDC *OIDCConfig
	// PublicURL is the broker's own origin (https://broker.example.com):
	// login return addresses must be on it, and cookies are scoped to it.
	PublicURL string
	Logger    *slog.Logger
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
	cfg   Config
	log   *slog.Logger
	login *loginState
	pages pages
}

// New returns a Portal.
func New(cfg Config) *Portal {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Portal{cfg: cfg, log: cfg.Logger, login: newLoginState(cfg), pages: parsePages()}
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
