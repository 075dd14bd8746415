package identity_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/identity"
)

func TestParseRoleMap(t *testing.T) {
	m, err := identity.ParseRoleMap([]string{"admin=fp-admins", "approver=fp-admins", "Engineer=field-eng", "auditor=cn=audit,ou=groups", "admin=fp-admins"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		groups []string
		want   []fieldpass.Role
	}{
		{[]string{"fp-admins"}, []fieldpass.Role{"admin", "approver"}},
		{[]string{"field-eng", "fp-admins", "staff"}, []fieldpass.Role{"admin", "approver", "engineer"}},
		{[]string{"cn=audit,ou=groups"}, []fieldpass.Role{"auditor"}},
		{[]string{"FP-ADMINS", "staff"}, nil}, // groups match exactly
		{nil, nil},
	} {
		if got := m.Roles("someone@example.net", "sub-1", tc.groups); !slices.Equal(got, tc.want) {
			t.Errorf("Roles(%q) = %v, want %v", tc.groups, got, tc.want)
		}
	}
	for _, bad := range []string{"admin", "root=fp-admins", "admin=", "=group", "admin= ",
		"admin=email:", "admin=email:not-an-email", "admin=domain:", "admin=domain:a@b.example", "admin=domain:*.example.com",
		"admin=domain:bad..example", "admin=sub:", "email:a@example.com=root", "fp-admins=admin"} {
		if _, err := identity.ParseRoleMap([]string{bad}); fieldpass.ErrorCode(err) != fieldpass.EINVALID {
			t.Errorf("ParseRoleMap(%q): %v, want invalid", bad, err)
		}
	}
}

// Providers that send no groups (Google Workspace without extra setup):
// roles by email, by the email's domain, or by subject.
func TestParseRoleMapWithoutGroups(t *testing.T) {
	m, err := identity.ParseRoleMap([]string{"admin=email:Alice@Example.com", "engineer=domain:Example.com",
		"auditor=sub:1044", "approver=group:email:odd-group", "domain:partner.example=engineer"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		email, sub string
		groups     []string
		want       []fieldpass.Role
	}{
		{"alice@example.com", "9", nil, []fieldpass.Role{"admin", "engineer"}},
		{"bob@example.com", "9", nil, []fieldpass.Role{"engineer"}},
		{"bob@sub.example.com", "9", nil, nil},  // no subdomains
		{"bob@evil-example.com", "9", nil, nil}, // the domain, not a suffix
		{"carol@elsewhere.example", "1044", nil, []fieldpass.Role{"auditor"}},
		{"dan@elsewhere.example", "10440", nil, nil}, // subjects match exactly
		{"dan@elsewhere.example", "9", []string{"email:odd-group"}, []fieldpass.Role{"approver"}},
		{"erin@partner.example", "9", nil, []fieldpass.Role{"engineer"}},
	} {
		if got := m.Roles(tc.email, tc.sub, tc.groups); !slices.Equal(got, tc.want) {
			t.Errorf("Roles(%s, %s, %q) = %v, want %v", tc.email, tc.sub, tc.groups, got, tc.want)
		}
	}
	if m.Len() != 5 {
		t.Errorf("Len = %d, want 5", m.Len())
	}
}

func TestMFAPolicy(t *testing.T) {
	def := identity.MFAPolicy{Require: true}
	for _, tc := range []struct {
		p    identity.MFAPolicy
		amr  []string
		acr  string
		want bool
	}{
		{def, []string{"pwd", "mfa"}, "", true},
		{def, []string{"otp"}, "", true},
		{def, []string{"hwk"}, "", true},
		{def, []string{"pwd"}, "", false},
		{def, nil, "urn:mfa", false},
		{identity.MFAPolicy{ACR: []string{"urn:mfa"}}, nil, "urn:mfa", true},
		{identity.MFAPolicy{AMR: []string{"fido"}}, []string{"mfa"}, "", false},
		{identity.MFAPolicy{AMR: []string{"fido"}}, []string{"fido"}, "", true},
	} {
		if got := tc.p.Asserted(tc.amr, tc.acr); got != tc.want {
			t.Errorf("%+v.Asserted(%v, %q) = %v, want %v", tc.p, tc.amr, tc.acr, got, tc.want)
		}
	}
	err := def.Check(&identity.Identity{AMR: []string{"pwd"}})
	if fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN {
		t.Fatalf("Check without MFA: %v", err)
	}
	for _, want := range []string{"amr claim to contain one of mfa, otp, hwk", "amr was [pwd]", "acr was absent"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if err := def.Check(&identity.Identity{MFA: true}); err != nil {
		t.Errorf("Check with MFA: %v", err)
	}
	if err := (identity.MFAPolicy{}).Check(&identity.Identity{}); err != nil {
		t.Errorf("Check when not required: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	ok := identity.Config{Issuer: "https://idp.example.com", ClientID: "fieldpass", RedirectURL: "https://broker.example.com/auth/callback"}
	if _, err := identity.New(ok); err != nil {
		t.Fatalf("New: %v", err)
	}
	loop := ok
	loop.Issuer, loop.RedirectURL = "http://127.0.0.1:5556/dex", "http://localhost:8080/auth/callback"
	if _, err := identity.New(loop); err != nil {
		t.Errorf("loopback http: %v", err)
	}
	for name, mut := range map[string]func(*identity.Config){
		"no issuer":     func(c *identity.Config) { c.Issuer = "" },
		"http issuer":   func(c *identity.Config) { c.Issuer = "http://idp.example.com" },
		"no client":     func(c *identity.Config) { c.ClientID = "" },
		"http redirect": func(c *identity.Config) { c.RedirectURL = "http://broker.example.com/auth/callback" },
		"bad scope":     func(c *identity.Config) { c.Scopes = []string{"openid email"} },
		"bad role in map": func(c *identity.Config) {
			c.Roles = identity.RoleMap{Groups: map[string][]fieldpass.Role{"g": {"root"}}}
		},
		"empty group in map": func(c *identity.Config) {
			c.Roles = identity.RoleMap{Groups: map[string][]fieldpass.Role{"": {"admin"}}}
		},
		"bad role by domain": func(c *identity.Config) {
			c.Roles = identity.RoleMap{Domains: map[string][]fieldpass.Role{"example.com": {"root"}}}
		},
	} {
		c := ok
		mut(&c)
		if _, err := identity.New(c); fieldpass.ErrorCode(err) != fieldpass.EINVALID {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
}

func TestCookieKey(t *testing.T) {
	c := identity.Config{Issuer: "https://idp.example.com", ClientID: "fieldpass", RedirectURL: "https://b.example.com/auth/callback", ClientSecret: "s3cret"}
	p1, _ := identity.New(c)
	p2, _ := identity.New(c)
	if k := p1.CookieKey(); len(k) != 32 || string(k) != string(p2.CookieKey()) {
		t.Errorf("CookieKey: want the same 32 bytes for the same client")
	}
	c.ClientSecret = ""
	p3, _ := identity.New(c)
	if p3.CookieKey() != nil {
		t.Errorf("CookieKey of a public client: want nil")
	}
}
