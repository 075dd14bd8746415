package identity

import (
	"slices"
	"strings"

	"github.com/fieldpass/fieldpass"
)

// RoleMap maps identity-provider groups to Fieldpass roles. A group may map
// to several roles, and several groups to one role. A person whose groups
// map to no role is a vendor.
type RoleMap map[string][]fieldpass.Role

// ParseRoleMap builds a RoleMap from ROLE=GROUP specs, as given to
// --role-map. The group is everything after the first "=", so LDAP-style
// names ("cn=ops,ou=groups") work; groups match exactly, case included.
func ParseRoleMap(specs []string) (RoleMap, error) {
	m := RoleMap{}
	for _, spec := range specs {
		role, group, ok := strings.Cut(spec, "=")
		if !ok || strings.TrimSpace(group) == "" {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "role mapping %q: want ROLE=GROUP, e.g. admin=fp-admins", spec)
		}
		r, err := fieldpass.ParseRole(role)
		if err != nil {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "role mapping %q: %s", spec, fieldpass.ErrorMessage(err))
		}
		group = strings.TrimSpace(group)
		if !slices.Contains(m[group], r) {
			m[group] = append(m[group], r)
		}
	}
	return m, nil
}

func (m RoleMap) validate() error {
	for g, roles := range m {
		if g == "" {
			return fieldpass.Errorf(fieldpass.EINVALID, "role mapping with an empty group")
		}
		if _, err := fieldpass.NormalizeRoles(roles); err != nil {
			return err
		}
	}
	return nil
}

// Roles returns the roles groups map to, sorted and without duplicates;
// nil (a vendor) for none.
func (m RoleMap) Roles(groups []string) []fieldpass.Role {
	var out []fieldpass.Role
	for _, g := range groups {
		for _, r := range m[g] {
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	slices.Sort(out)
	return out
}

// DefaultMFAAMR are the amr values (RFC 8176) that count as a multi-factor
// login when MFAPolicy.AMR is empty.
var DefaultMFAAMR = []string{"mfa", "otp", "hwk"}

// MFAPolicy says which assertions of the identity provider count as a
// multi-factor login, and whether one is required to log in at all.
// Devices may demand one too (by label); that is checked at connect time
// against what the login asserted (Identity.MFA).
type MFAPolicy struct {
	// Require refuses logins without a multi-factor assertion.
	Require bool
	// AMR lists amr values that count (default DefaultMFAAMR).
	AMR []string
	// ACR lists acr values that count (default none).
	ACR []string
}

func (p MFAPolicy) amr() []string {
	if len(p.AMR) == 0 {
		return DefaultMFAAMR
	}
	return p.AMR
}

// Asserted reports whether amr holds one of the policy's amr values or acr
// is one of its acr values.
func (p MFAPolicy) Asserted(amr []string, acr string) bool {
	for _, a := range amr {
		if slices.Contains(p.amr(), a) {
			return true
		}
	}
	return acr != "" && slices.Contains(p.ACR, acr)
}

// Check refuses id when the policy requires multi-factor login and id has
// none, with a message naming the claims and values wanted and those seen.
func (p MFAPolicy) Check(id *Identity) error {
	if !p.Require || id.MFA {
		return nil
	}
	return fieldpass.Errorf(fieldpass.EFORBIDDEN, "%s", p.Missing(id.AMR, id.ACR))
}

// Missing describes what a login lacked for this policy: which claim, which
// values, and what the provider sent instead.
func (p MFAPolicy) Missing(amr []string, acr string) string {
	want := "the ID token's amr claim to contain one of " + strings.Join(p.amr(), ", ")
	if len(p.ACR) > 0 {
		want += ", or its acr claim to be one of " + strings.Join(p.ACR, ", ")
	}
	got := "amr was absent"
	if len(amr) > 0 {
		got = "amr was [" + strings.Join(amr, ", ") + "]"
	}
	if acr != "" {
		got += ", acr was " + acr
	} else {
		got += ", acr was absent"
	}
	return "multi-factor login is required: this broker wants " + want + "; the identity provider sent none of these (" + got +
		"). Log in again with a second factor, or ask your identity provider's administrator to require one for this application."
}
