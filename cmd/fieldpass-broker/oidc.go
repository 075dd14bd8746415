package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/fieldpass/fieldpass/cmd/internal/cliflag"
	"github.com/fieldpass/fieldpass/identity"
	"github.com/fieldpass/fieldpass/portal"
)

// oidcFlags are serve's flags for people's login through an identity
// provider. The client secret is read from a file, never taken on the
// command line (where ps and shell history would show it).
type oidcFlags struct {
	issuer, clientID, secretFile *string
	scopes, emailClaim, groups   *string
	roleMap, mfaAMR, mfaACR      cliflag.Strings
	requireMFA                   *bool
	trustUnverifiedEmail         *bool
	sessionTTL, cliTTL           *time.Duration
}

func addOIDCFlags(fs *flag.FlagSet) *oidcFlags {
	f := &oidcFlags{
		issuer:     fs.String("oidc-issuer", "", "OIDC issuer `URL` of the identity provider people log in with (empty: no login; only operator-issued tokens work)"),
		clientID:   fs.String("oidc-client-id", "", "OIDC client ID of this broker; register PUBLIC_URL/auth/callback as its redirect URI"),
		secretFile: fs.String("oidc-client-secret-file", "", "`file` holding the OIDC client secret (empty: a public client, PKCE only)"),
		scopes:     fs.String("oidc-scopes", strings.Join(identity.DefaultScopes, ","), "comma-separated OIDC scopes to request (openid is always added)"),
		emailClaim: fs.String("oidc-email-claim", "email", "ID token `claim` holding the person's email"),
		groups:     fs.String("oidc-groups-claim", "groups", "ID token `claim` listing the person's groups (a dotted path reads nested objects)"),
		trustUnverifiedEmail: fs.Bool("oidc-trust-unverified-email", false, "accept logins whose ID token has no email_verified claim, for providers that never send it "+
			"and only hand out addresses they own (default: refused; an explicit false is always refused)"),
		requireMFA: fs.Bool("require-mfa", false, "refuse logins for which the identity provider did not assert multi-factor authentication (see --mfa-amr, --mfa-acr)"),
		sessionTTL: fs.Duration("portal-session-ttl", 12*time.Hour, "lifetime of a portal login (its session cookie and token)"),
		cliTTL:     fs.Duration("cli-token-ttl", 12*time.Hour, "lifetime of the token fieldpass login gives the CLI (a stolen one is good for as long; roles are re-read only at a login)"),
	}
	fs.Var(&f.roleMap, "role-map", "`ROLE=GROUP`: members of the identity provider's GROUP get ROLE (admin, approver, engineer, auditor); for providers that send no groups, ROLE=email:ADDRESS, ROLE=domain:DOMAIN or ROLE=sub:SUBJECT (docs/oidc); repeatable; people with no mapped role are vendors")
	fs.Var(&f.mfaAMR, "mfa-amr", "`VALUE` of the amr claim that counts as multi-factor login; repeatable (default mfa, otp, hwk)")
	fs.Var(&f.mfaACR, "mfa-acr", "`VALUE` of the acr claim that counts as multi-factor login; repeatable (default none)")
	return f
}

// config builds the login configuration, or nil when --oidc-issuer is
// unset. It reaches for the provider once to warn early of a mistake;
// a provider that is down does not stop the broker.
func (f *oidcFlags) config(ctx context.Context, publicURL *url.URL, log *slog.Logger) (*portal.OIDCConfig, error) {
	if *f.issuer == "" {
		if *f.clientID != "" || *f.secretFile != "" || len(f.roleMap) > 0 || *f.requireMFA {
			return nil, usageError{Msg: "the --oidc-* , --role-map and --require-mfa flags need --oidc-issuer"}
		}
		return nil, nil
	}
	if *f.clientID == "" {
		return nil, usageError{Msg: "--oidc-issuer needs --oidc-client-id"}
	}
	var secret string
	if *f.secretFile != "" {
		b, err := os.ReadFile(*f.secretFile)
		if err != nil {
			return nil, fmt.Errorf("--oidc-client-secret-file: %w", err)
		}
		if secret = strings.TrimSpace(string(b)); secret == "" {
			return nil, usageError{Msg: fmt.Sprintf("--oidc-client-secret-file %s is empty", *f.secretFile)}
		}
	}
	roles, err := identity.ParseRoleMap(f.roleMap)
	if err != nil {
		return nil, usageError{Msg: "--role-map: " + cliexit.Message(err)}
	}
	var scopes []string
	for _, s := range strings.Split(*f.scopes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			scopes = append(scopes, s)
		}
	}
	if *f.sessionTTL < time.Minute || *f.cliTTL < time.Minute {
		return nil, usageError{Msg: "--portal-session-ttl and --cli-token-ttl must be at least a minute"}
	}
	p, err := identity.New(identity.Config{
		Issuer:       *f.issuer,
		ClientID:     *f.clientID,
		ClientSecret: secret,
		RedirectURL:  publicURL.Scheme + "://" + publicURL.Host + "/auth/callback",
		Scopes:       scopes,
		EmailClaim:   *f.emailClaim,
		GroupsClaim:  *f.groups,
		Roles:        roles,

		TrustEmailWithoutVerified: *f.trustUnverifiedEmail,
		MFA:                       identity.MFAPolicy{Require: *f.requireMFA, AMR: f.mfaAMR, ACR: f.mfaACR},
	})
	if err != nil {
		return nil, usageError{Msg: cliexit.Message(err)}
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.Discover(dctx); err != nil {
		log.Warn("identity provider not reachable yet; login will retry", "issuer", *f.issuer, "err", cliexit.Message(err))
	}
	log.Info("login through identity provider", "issuer", *f.issuer, "client_id", *f.clientID, "require_mfa", *f.requireMFA, "role_mappings", len(f.roleMap))
	return &portal.OIDCConfig{Provider: p, SessionTTL: *f.sessionTTL, CLITokenTTL: *f.cliTTL}, nil
}
