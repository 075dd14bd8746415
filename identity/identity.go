// Package identity is the broker's OpenID Connect relying party. It sends
// people to the identity provider (authorization code flow with PKCE S256,
// state and nonce), verifies the ID token that comes back (signature,
// issuer, audience, expiry, nonce) with go-oidc, and turns its claims into
// what Fieldpass needs: an email, roles through a RoleMap (from the groups
// claim, or by email, domain or subject for providers that send no groups),
// and whether the login was multi-factor (MFAPolicy).
//
// State, nonce and PKCE verifier are the caller's to generate and keep
// (package portal keeps them in an encrypted cookie); this package only checks
// what the provider returns against them.
package identity

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/fieldpass/fieldpass"
)

// Config configures a Provider. Zero values mean the defaults.
type Config struct {
	// Issuer is the provider's issuer URL; its discovery document is at
	// Issuer + "/.well-known/openid-configuration". Required.
	Issuer string
	// ClientID is this broker's client at the provider: ID tokens must name
	// it in their audience. Required.
	ClientID string
	// ClientSecret authenticates the broker at the token endpoint; empty for
	// a public client (PKCE alone).
	ClientSecret string
	// RedirectURL is the broker's callback, PUBLIC_URL/auth/callback, as
	// registered at the provider. Required: https, or http on a loopback
	// host.
	RedirectURL string
	// Scopes asked for (default: openid, email, groups). openid is added if
	// missing.
	Scopes []string
	// EmailClaim names the claim holding the person's email (default
	// "email"); GroupsClaim the claim listing their groups (default
	// "groups"). A name with dots that is not a claim itself is read as a
	// path into nested objects ("realm_access.roles"). A claim missing from
	// the ID token is looked up at the userinfo endpoint.
	EmailClaim  string
	GroupsClaim string
	// TrustEmailWithoutVerified accepts a login whose provider says nothing
	// of whether the email is verified (no email_verified claim): for
	// providers that only ever hand out addresses they own, and never send
	// it. Default false: such a login is refused, since grants are made
	// out to emails and an unverified address could be anyone's. An
	// explicit email_verified false is always refused.
	TrustEmailWithoutVerified bool
	// Roles maps groups, emails, domains and subjects to roles; a person
	// matched by no rule is a vendor.
	Roles RoleMap
	// MFA says what counts as a multi-factor login, and whether it is
	// required.
	MFA MFAPolicy
	// HTTPClient talks to the provider (default: a client with a 15s
	// timeout).
	HTTPClient *http.Client
	// Now is the clock ID token expiry is checked against (default
	// time.Now).
	Now func() time.Time
}

// DefaultScopes are asked for when Config.Scopes is empty.
var DefaultScopes = []string{oidc.ScopeOpenID, "email", "groups"}

// Identity is a verified login: who the provider says the person is.
type Identity struct {
	Issuer  string
	Subject string
	Email   string // normalised (fieldpass.NormalizeEmail)
	Groups  []string
	Roles   []fieldpass.Role // through the RoleMap; nil: a vendor
	AMR     []string         // authentication methods (RFC 8176), as asserted
	ACR     string           // authentication context class, as asserted
	// MFA is true when AMR or ACR holds a value the MFAPolicy counts as
	// multi-factor, whether or not the policy requires it.
	MFA bool
	// Expiry is the ID token's.
	Expiry time.Time
}

// Provider is the relying party of one identity provider. Discovery happens
// on first use and is retried on later calls until it succeeds, so a broker
// starts while its provider is down and logins work once it is back.
type Provider struct {
	cfg    Config
	scopes []string

	mu       sync.Mutex // guards op and verifier
	op       *oidc.Provider
	verifier *oidc.IDTokenVerifier
}

// New checks cfg and returns a Provider. It does not contact the provider:
// see Discover.
func New(cfg Config) (*Provider, error) {
	if cfg.Issuer == "" {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "OIDC issuer URL is required")
	}
	if u, err := url.Parse(cfg.Issuer); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && fieldpass.IsLoopbackHost(u.Hostname()))) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "OIDC issuer %q: want an https:// URL (http:// only on a loopback host)", cfg.Issuer)
	}
	if cfg.ClientID == "" {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "OIDC client ID is required")
	}
	if u, err := url.Parse(cfg.RedirectURL); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && fieldpass.IsLoopbackHost(u.Hostname()))) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "OIDC redirect URL %q: want an https:// URL (http:// only on a loopback host)", cfg.RedirectURL)
	}
	if cfg.EmailClaim == "" {
		cfg.EmailClaim = "email"
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Roles.validate(); err != nil {
		return nil, err
	}
	scopes := cfg.Scopes
	if len(scopes) == 0 {
		scopes = DefaultScopes
	}
	if !slices.Contains(scopes, oidc.ScopeOpenID) {
		scopes = append([]string{oidc.ScopeOpenID}, scopes...)
	}
	for _, s := range scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid OIDC scope %q", s)
		}
	}
	return &Provider{cfg: cfg, scopes: slices.Clone(scopes)}, nil
}

// MFA returns the provider's MFA policy.
func (p *Provider) MFA() MFAPolicy { return p.cfg.MFA }

// CookieKey derives a 32-byte key for the broker's own short-lived login
// cookies from the client secret, so that every broker sharing the client
// shares the key and a restart keeps logins in flight. It returns nil for a
// public client (no secret).
func (p *Provider) CookieKey() []byte {
	if p.cfg.ClientSecret == "" {
		return nil
	}
	k, err := hkdf.Key(sha256.New, []byte(p.cfg.ClientSecret), []byte(p.cfg.ClientID), "fieldpass login cookie v1", 32)
	if err != nil {
		return nil
	}
	return k
}

func (p *Provider) ctx(ctx context.Context) context.Context {
	ctx = oidc.ClientContext(ctx, p.cfg.HTTPClient)
	return context.WithValue(ctx, oauth2.HTTPClient, p.cfg.HTTPClient)
}

// Discover fetches the provider's discovery document, once: later calls
// return at once. An unreachable provider is an unavailable error.
func (p *Provider) Discover(ctx context.Context) error {
	_, _, err := p.discover(ctx)
	return err
}

func (p *Provider) discover(ctx context.Context) (*oidc.Provider, *oidc.IDTokenVerifier, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.op != nil {
		return p.op, p.verifier, nil
	}
	// The key set keeps this context (without its cancellation) for its
	// later fetches: give it the HTTP client, not the request's values.
	op, err := oidc.NewProvider(p.ctx(ctx), p.cfg.Issuer)
	if err != nil {
		return nil, nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "the identity provider at %s is unreachable or misconfigured: %v", p.cfg.Issuer, err)
	}
	p.op = op
	p.verifier = op.VerifierContext(p.ctx(context.Background()), &oidc.Config{ClientID: p.cfg.ClientID, Now: p.cfg.Now})
	return p.op, p.verifier, nil
}

func (p *Provider) oauth(op *oidc.Provider) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     p.cfg.ClientID,
		ClientSecret: p.cfg.ClientSecret,
		Endpoint:     op.Endpoint(),
		RedirectURL:  p.cfg.RedirectURL,
		Scopes:       p.scopes,
	}
}

// AuthCodeURL is where to send the browser to log in: it carries state,
// nonce, and the S256 challenge of verifier (oauth2.GenerateVerifier).
func (p *Provider) AuthCodeURL(ctx context.Context, state, nonce, verifier string) (string, error) {
	op, _, err := p.discover(ctx)
	if err != nil {
		return "", err
	}
	return p.oauth(op).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), nil
}

// Exchange redeems code with verifier at the token endpoint, verifies the ID
// token (signature, issuer, audience, expiry) and that it carries nonce, and
// returns the identity it asserts, roles mapped. It does not apply the MFA
// requirement: see MFAPolicy.Check. Errors are fieldpass errors whose
// messages are safe to show the person logging in; none repeats a code or
// a token.
func (p *Provider) Exchange(ctx context.Context, code, verifier, nonce string) (*Identity, error) {
	op, v, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	ctx = p.ctx(ctx)
	tok, err := p.oauth(op).Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			// The description may quote the code: show only the error code.
			return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the identity provider refused the login (%s): start again", re.ErrorCode)
		}
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "cannot reach the identity provider's token endpoint: %v", redactURLErr(err))
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the identity provider returned no ID token (is the openid scope granted?)")
	}
	idt, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the identity provider's ID token was rejected: %s", strings.TrimPrefix(err.Error(), "oidc: "))
	}
	if idt.Subject == "" {
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the identity provider's ID token has no subject (sub)")
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 || nonce == "" {
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the ID token's nonce does not match this login (a replayed or substituted response): start again")
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the ID token does not match its access token (at_hash)")
		}
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the ID token's claims cannot be read: %v", err)
	}
	// With several audiences the token must have been issued to us (OIDC
	// Core 3.1.3.7, azp).
	if len(idt.Audience) > 1 {
		if azp, _ := claims["azp"].(string); azp != p.cfg.ClientID {
			return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the ID token has several audiences and was not issued to this broker (azp %q)", azp)
		}
	}

	// Email and groups may live only at the userinfo endpoint (some
	// providers keep ID tokens small).
	_, hasEmail := lookupClaim(claims, p.cfg.EmailClaim)
	_, hasGroups := lookupClaim(claims, p.cfg.GroupsClaim)
	if (!hasEmail || !hasGroups) && op.UserInfoEndpoint() != "" && tok.AccessToken != "" {
		if ui, err := op.UserInfo(ctx, oauth2.StaticTokenSource(tok)); err == nil && ui.Subject == idt.Subject {
			extra := map[string]any{}
			if ui.Claims(&extra) == nil {
				for _, name := range []string{p.cfg.EmailClaim, p.cfg.GroupsClaim, "email_verified"} {
					if _, ok := lookupClaim(claims, name); !ok {
						if v, ok := lookupClaim(extra, name); ok {
							claims[name] = v
						}
					}
				}
			}
		}
	}
	return p.identity(idt, claims)
}

func (p *Provider) identity(idt *oidc.IDToken, claims map[string]any) (*Identity, error) {
	rawEmail, ok := lookupClaim(claims, p.cfg.EmailClaim)
	emailStr, _ := rawEmail.(string)
	if !ok || emailStr == "" {
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the identity provider sent no %q claim: the broker needs an email to know you (is the email scope granted, or --oidc-email-claim right?)", p.cfg.EmailClaim)
	}
	email, err := fieldpass.NormalizeEmail(emailStr)
	if err != nil {
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the identity provider's %q claim is not a usable email: %s", p.cfg.EmailClaim, fieldpass.ErrorMessage(err))
	}
	// Grants are made out to emails: an address the provider has not
	// verified could be anyone's. Silence is not a yes (issue 10), unless
	// the operator says this provider never sends the claim.
	v, ok := claims["email_verified"]
	switch b, isBool := v.(bool); {
	case !ok && !p.cfg.TrustEmailWithoutVerified:
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the identity provider does not say that the email %s is verified (no email_verified claim): "+
			"an operator whose provider never sends it may allow such logins (--oidc-trust-unverified-email)", email)
	case ok && ((isBool && !b) || (!isBool && fmt.Sprint(v) != "true")):
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "the identity provider says the email %s is not verified: verify it there, then log in again", email)
	}
	id := &Identity{
		Issuer:  idt.Issuer,
		Subject: idt.Subject,
		Email:   email,
		Expiry:  idt.Expiry,
	}
	if g, ok := lookupClaim(claims, p.cfg.GroupsClaim); ok {
		id.Groups = stringList(g)
	}
	id.Roles = p.cfg.Roles.Roles(id.Email, id.Subject, id.Groups)
	if a, ok := claims["amr"]; ok {
		id.AMR = stringList(a)
	}
	id.ACR, _ = claims["acr"].(string)
	id.MFA = p.cfg.MFA.Asserted(id.AMR, id.ACR)
	return id, nil
}

// lookupClaim finds name in claims: as a claim, or else, if it has dots, as
// a path into nested objects.
func lookupClaim(claims map[string]any, name string) (any, bool) {
	if v, ok := claims[name]; ok {
		return v, true
	}
	if !strings.Contains(name, ".") {
		return nil, false
	}
	var cur any = claims
	for _, part := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// stringList reads a claim that is a list of strings, or one string
// (some providers send a lone group as a string). Other values are dropped.
func stringList(v any) []string {
	switch v := v.(type) {
	case string:
		if v == "" {
			return nil
		}
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// redactURLErr drops the query of a *url.Error's URL: a token request's
// body is not in it, but be safe with whatever the provider's URL carries.
func redactURLErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		u, perr := url.Parse(ue.URL)
		if perr == nil {
			u.RawQuery = ""
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}
