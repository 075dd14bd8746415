package identity_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
	"golang.org/x/oauth2"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/identity"
)

// person is someone at the in-process identity provider (mockoidc), with
// exactly the claims a real provider would put in the ID token.
type person struct {
	sub    string
	claims map[string]any
}

func (u *person) ID() string { return u.sub }

func (u *person) Userinfo([]string) ([]byte, error) {
	c := jwt.MapClaims{"sub": u.sub}
	for k, v := range u.claims {
		c[k] = v
	}
	return json.Marshal(c)
}

func (u *person) Claims(_ []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	c := jwt.MapClaims{
		"iss": base.Issuer, "sub": base.Subject, "aud": []string(base.Audience),
		"exp": base.ExpiresAt.Unix(), "iat": base.IssuedAt.Unix(), "nbf": base.NotBefore.Unix(),
		"jti": base.ID, "nonce": base.Nonce,
	}
	for k, v := range u.claims {
		c[k] = v
	}
	return c, nil
}

// login runs the authorization code flow of cfg (issuer and client filled
// in) for u against idp, as a browser and the broker's callback would, and
// returns the identity the provider asserted.
func login(t *testing.T, idp *mockoidc.MockOIDC, cfg identity.Config, u *person) *identity.Identity {
	t.Helper()
	cfg.Issuer, cfg.ClientID, cfg.ClientSecret = idp.Issuer(), idp.ClientID, idp.ClientSecret
	cfg.RedirectURL = "http://127.0.0.1:8080/auth/callback"
	p, err := identity.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	verifier := oauth2.GenerateVerifier()
	authURL, err := p.AuthCodeURL(t.Context(), "state-1", "nonce-1", verifier)
	if err != nil {
		t.Fatal(err)
	}
	idp.QueueUser(u)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || back.Query().Get("code") == "" {
		t.Fatalf("the provider sent the browser to %q (status %d), want the callback with a code", resp.Header.Get("Location"), resp.StatusCode)
	}
	id, err := p.Exchange(t.Context(), back.Query().Get("code"), verifier, "nonce-1")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestLoginRoles: through a real authorization code flow, roles come from
// the groups claim, from a claim of another name (Entra ID's app roles in
// "roles"), or, from providers that send no groups, by email, domain or
// subject.
func TestLoginRoles(t *testing.T) {
	idp, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := idp.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Shutdown() })

	noGroups, err := identity.ParseRoleMap([]string{"admin=email:alice@example.com", "engineer=domain:example.com", "auditor=sub:109876"})
	if err != nil {
		t.Fatal(err)
	}
	appRoles, err := identity.ParseRoleMap([]string{"admin=Fieldpass.Admin", "approver=Fieldpass.Approver"})
	if err != nil {
		t.Fatal(err)
	}
	verified := func(email string, more ...any) map[string]any {
		c := map[string]any{"email": email, "email_verified": true}
		for i := 0; i+1 < len(more); i += 2 {
			c[more[i].(string)] = more[i+1]
		}
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  identity.Config
		u    *person
		want []fieldpass.Role
	}{
		{"google: by email and domain", identity.Config{Roles: noGroups, Scopes: []string{"openid", "email", "profile"}},
			&person{"g-1", verified("Alice@Example.com", "hd", "example.com")}, []fieldpass.Role{"admin", "engineer"}},
		{"google: by domain", identity.Config{Roles: noGroups}, &person{"g-2", verified("bob@example.com")}, []fieldpass.Role{"engineer"}},
		{"google: another domain is a vendor", identity.Config{Roles: noGroups}, &person{"g-3", verified("tech@vendor.example")}, nil},
		{"by subject", identity.Config{Roles: noGroups}, &person{"109876", verified("carol@elsewhere.example")}, []fieldpass.Role{"auditor"}},
		{"entra: app roles in roles", identity.Config{Roles: appRoles, GroupsClaim: "roles"},
			&person{"e-1", verified("dave@contoso.example", "roles", []string{"Fieldpass.Approver"}, "groups", []string{"Fieldpass.Admin"})},
			[]fieldpass.Role{"approver"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := login(t, idp, tc.cfg, tc.u)
			if !slices.Equal(id.Roles, tc.want) {
				t.Errorf("roles %v, want %v (email %s, subject %s, groups %v)", id.Roles, tc.want, id.Email, id.Subject, id.Groups)
			}
		})
	}
}
