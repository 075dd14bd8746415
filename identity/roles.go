package identity

import (
	"slices"
	"strings"

	"github.com/fieldpass/fieldpass"
)

// RoleMap gives a person roles at each login from what the identity
// provider asserts: the groups (or app roles) in the groups claim, or, for
// providers that send no groups, the person's email, its domain or their
// subject. Every rule that matches adds its roles; a person matched by none
// is a vendor. Emails and domains are trusted only because a login with an
// unverified email is refused (Provider.Exchange).
type RoleMap struct {
	Groups   map[string][]fieldpass.Role // by group, exactly, case included
	Emails   map[string][]fieldpass.Role // by email, normalised (fieldpass.NormalizeEmail)
	Domains  map[string][]fieldpass.Role // by the email's domain, lower case, exactly: no subdomains
	Subjects map[string][]fieldpass.Role // by the provider's subject (sub), exactly
}

// Role mapping sources: ROLE=KIND:VALUE (ParseRoleMap).
const (
	mapGroup   = "group:"
	mapEmail   = "email:"
	mapDomain  = "domain:"
	mapSubject = "sub:"
)

const roleMapWant = "want ROLE=GROUP, ROLE=group:GROUP, ROLE=email:ADDRESS, ROLE=domain:DOMAIN or ROLE=sub:SUBJECT, e.g. admin=fp-admins or engineer=domain:example.com"

// ParseRoleMap builds a RoleMap from the specs given to --role-map:
//
//	ROLE=GROUP          members of GROUP (everything after the first "=",
//	                    so LDAP-style names "cn=ops,ou=groups" work)
//	ROLE=group:GROUP    the same, for a group whose name starts with a kind
//	ROLE=email:ADDRESS  the person with this (verified) email
//	ROLE=domain:DOMAIN  everyone whose (verified) email is @DOMAIN
//	ROLE=sub:SUBJECT    the person the provider calls SUBJECT (its sub claim)
//
// The kinds other than a plain group are also accepted the other way
// round (email:alice@example.com=admin).
func ParseRoleMap(specs []string) (RoleMap, error) {
	m := RoleMap{}
	for _, spec := range specs {
		if err := m.add(spec); err != nil {
			return RoleMap{}, err
		}
	}
	return m, nil
}

func (m *RoleMap) add(spec string) error {
	role, source, ok := strings.Cut(spec, "=")
	r, err := fieldpass.ParseRole(role)
	if ok && err != nil {
		// email:alice@example.com=admin
		i := strings.LastIndex(spec, "=")
		if r2, err2 := fieldpass.ParseRole(spec[i+1:]); err2 == nil && kindOf(spec[:i]) != "" {
			r, source, err = r2, spec[:i], nil
		}
	}
	if !ok || strings.TrimSpace(source) == "" {
		return fieldpass.Errorf(fieldpass.EINVALID, "role mapping %q: %s", spec, roleMapWant)
	}
	if err != nil {
		return fieldpass.Errorf(fieldpass.EINVALID, "role mapping %q: %s", spec, fieldpass.ErrorMessage(err))
	}
	source = strings.TrimSpace(source)
	kind := kindOf(source)
	value := strings.TrimSpace(strings.TrimPrefix(source, kind))
	if value == "" {
		return fieldpass.Errorf(fieldpass.EINVALID, "role mapping %q: nothing after %s; %s", spec, kind, roleMapWant)
	}
	var into *map[string][]fieldpass.Role
	switch kind {
	case mapEmail:
		email, err := fieldpass.NormalizeEmail(value)
		if err != nil {
			return fieldpass.Errorf(fieldpass.EINVALID, "role mapping %q: %s", spec, fieldpass.ErrorMessage(err))
		}
		value, into = email, &m.Emails
	case mapDomain:
		d := strings.ToLower(value)
		if _, err := fieldpass.NormalizeEmail("x@" + d); err != nil || strings.ContainsAny(d, "@*") {
			return fieldpass.Errorf(fieldpass.EINVALID, "role mapping %q: %q is not a domain: want e.g. domain:example.com (exactly that domain, no subdomains)", spec, value)
		}
		value, into = d, &m.Domains
	case mapSubject:
		into = &m.Subjects
	default: // a group, named plainly or after group:
		into = &m.Groups
	}
	if *into == nil {
		*into = map[string][]fieldpass.Role{}
	}
	if !slices.Contains((*into)[value], r) {
		(*into)[value] = append((*into)[value], r)
	}
	return nil
}

// kindOf returns the kind prefix source starts with, or "" for a plain group.
func kindOf(source string) string {
	for _, k := range []string{mapGroup, mapEmail, mapDomain, mapSubject} {
		if strings.HasPrefix(source, k) {
			return k
		}
	}
	return ""
}

// Len is the number of rules.
func (m RoleMap) Len() int { return len(m.Groups) + len(m.Emails) + len(m.Domains) + len(m.Subjects) }

func (m RoleMap) validate() error {
	for _, rules := range []map[string][]fieldpass.Role{m.Groups, m.Emails, m.Domains, m.Subjects} {
		for k, roles := range rules {
			if k == "" {
				return fieldpass.Errorf(fieldpass.EINVALID, "role mapping with an empty group, email, domain or subject")
			}
			if _, err := fieldpass.NormalizeRoles(roles); err != nil {
				return err
			}
		}
	}
	return nil
}

// Roles returns the roles of a person with this (normalised) email,
// subject and groups: sorted and without duplicates; nil (a vendor) for
// none.
func (m RoleMap) Roles(email, subject string, groups []string) []fieldpass.Role {
	var out []fieldpass.Role
	add := func(roles []fieldpass.Role) {
		for _, r := range roles {
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	for _, g := range groups {
		add(m.Groups[g])
	}
	if email != "" {
		add(m.Emails[email])
		if _, domain, ok := strings.Cut(email, "@"); ok {
			add(m.Domains[domain])
		}
	}
	if subject != "" {
		add(m.Subjects[subject])
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
