// Package devidp is a development OpenID Connect provider: a real OP (the
// protocol is zitadel/oidc's op package) with an in-memory storage, users
// from a file and a plain HTML login form, for browser tests and the local
// demo. It is not for production: passwords may sit in the users file in
// the clear, and nothing it holds survives a restart.
package devidp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"

	"github.com/fieldpass/fieldpass"
)

// Client is a relying party registered at the provider.
type Client struct {
	// ID is the client_id. Required.
	ID string
	// Secret authenticates the client at the token endpoint
	// (client_secret_basic or client_secret_post). Empty: a public client,
	// which must use PKCE.
	Secret string
	// RedirectURIs are the only redirect_uri values accepted, compared
	// exactly. At least one is required.
	RedirectURIs []string
}

// Config configures a Server. Zero values mean the defaults.
type Config struct {
	// Issuer is the provider's URL, exactly as relying parties are
	// configured with it (no trailing slash). http is allowed: this is a
	// development provider. Required.
	Issuer string
	// Users may log in. At least one is required; see ParseUsers.
	Users []User
	// Clients may ask for logins. At least one is required.
	Clients []Client
	// SigningKey signs ID tokens (default: a fresh 2048-bit RSA key, so
	// tokens from an earlier run no longer verify).
	SigningKey *rsa.PrivateKey
	// Logger gets a line per login attempt (default: discard). The OP
	// library logs protocol errors on slog's default logger.
	Logger *slog.Logger
	// Now is the clock for auth request and token expiry (default
	// time.Now).
	Now func() time.Time
}

// Server is the provider: an http.Handler serving discovery, JWKS, the
// authorization, token and userinfo endpoints, and the login form.
type Server struct {
	handler http.Handler
	storage *storage
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	iss, err := url.Parse(cfg.Issuer)
	// The routes sit at the root (discovery, the form's paths), so an
	// issuer with a path would name documents nobody serves.
	if err != nil || (iss.Scheme != "http" && iss.Scheme != "https") || iss.Host == "" || iss.Path != "" || iss.RawQuery != "" || iss.Fragment != "" || iss.User != nil {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "issuer %q: want http(s)://HOST[:PORT], without a path or a trailing slash", cfg.Issuer)
	}
	if len(cfg.Users) == 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "no users")
	}
	if len(cfg.Clients) == 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "no clients")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SigningKey == nil {
		if cfg.SigningKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, fmt.Errorf("generate signing key: %w", err)
		}
	}
	st := &storage{
		now:      cfg.Now,
		users:    map[string]*User{},
		subs:     map[string]*User{},
		clients:  map[string]*client{},
		key:      signingKey{id: keyID(&cfg.SigningKey.PublicKey), key: cfg.SigningKey},
		requests: map[string]*authRequest{},
		codes:    map[string]string{},
		tokens:   map[string]*accessToken{},
	}
	for _, u := range cfg.Users {
		if err := u.normalize(); err != nil {
			return nil, err
		}
		if st.users[u.Email] != nil || st.subs[u.Subject] != nil {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "user %s appears twice", u.Email)
		}
		st.users[u.Email], st.subs[u.Subject] = &u, &u
	}
	var formTargets []string
	for _, c := range cfg.Clients {
		if c.ID == "" {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "a client without an ID")
		}
		if st.clients[c.ID] != nil {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "client %s appears twice", c.ID)
		}
		if len(c.RedirectURIs) == 0 {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "client %s has no redirect URI", c.ID)
		}
		for _, r := range c.RedirectURIs {
			u, err := url.Parse(r)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
				return nil, fieldpass.Errorf(fieldpass.EINVALID, "client %s: redirect URI %q: want an absolute http(s) URL without a fragment", c.ID, r)
			}
			formTargets = append(formTargets, u.Scheme+"://"+u.Host)
		}
		st.clients[c.ID] = &client{id: c.ID, secret: c.Secret, redirectURIs: slices.Clone(c.RedirectURIs)}
	}

	var cryptoKey [32]byte
	rand.Read(cryptoKey[:])
	provider, err := op.NewProvider(&op.Config{
		// Encrypts the opaque access tokens; they need not outlive the
		// process.
		CryptoKey:          cryptoKey,
		CodeMethodS256:     true,
		AuthMethodPost:     true,
		SupportedUILocales: []language.Tag{language.English},
	}, st, op.StaticIssuer(cfg.Issuer), op.WithAllowInsecure())
	if err != nil {
		return nil, fmt.Errorf("start the OpenID provider: %w", err)
	}

	page, err := template.New("login").Parse(loginHTML)
	if err != nil {
		return nil, fmt.Errorf("login page template: %w", err)
	}
	slices.Sort(formTargets)
	l := &loginForm{
		page:     page,
		storage:  st,
		callback: op.AuthCallbackURL(provider),
		logger:   cfg.Logger,
		// The form posts to this origin, whose answer redirects to the
		// client; Chromium holds those redirects to form-action too.
		csp: "default-src 'none'; style-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self' " + strings.Join(slices.Compact(formTargets), " "),
	}
	return &Server{handler: routes(provider, l), storage: st}, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// keyID names a signing key by its public key, so a key given by file
// keeps its kid across restarts and relying parties' caches stay valid.
func keyID(pub *rsa.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

// ReadSigningKey reads an RSA private key from a PEM file (PKCS#1 or
// PKCS#8), such as `openssl genrsa 2048` writes.
func ReadSigningKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "signing key %s: no PEM block", path)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "signing key %s: not an RSA private key in PKCS#1 or PKCS#8", path)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "signing key %s: not an RSA key", path)
	}
	return rk, nil
}

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

var errLoginExpired = errors.New("this login has expired or is unknown: go back to the application and start again")
