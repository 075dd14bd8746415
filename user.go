package fieldpass

import (
	"encoding/base64"
	"net/mail"
	"slices"
	"strings"
	"time"
)

// Role is what a user may do beyond connecting within their grants. Roles
// come from the OIDC groups claim through a configurable mapping; a user
// with no role is a vendor, who reaches only what grants made out to their
// email allow.
type Role string

const (
	// RoleAdmin enrols and decommissions devices, creates and revokes
	// grants, and manages users.
	RoleAdmin Role = "admin"
	// RoleApprover approves or denies other people's access requests.
	RoleApprover Role = "approver"
	// RoleEngineer sees the devices they hold grants for and requests access.
	RoleEngineer Role = "engineer"
	// RoleAuditor reads sessions, audit events and recordings; changes nothing.
	RoleAuditor Role = "auditor"
)

// Roles lists every role, in a stable order.
var Roles = []Role{RoleAdmin, RoleApprover, RoleEngineer, RoleAuditor}

// ParseRole parses one role name.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Roles, r) {
		return "", Errorf(EINVALID, "unknown role %q: want admin, approver, engineer or auditor", s)
	}
	return r, nil
}

// NormalizeRoles validates roles and returns them sorted and without
// duplicates; nil (a vendor) for none.
func NormalizeRoles(roles []Role) ([]Role, error) {
	var out []Role
	for _, r := range roles {
		p, err := ParseRole(string(r))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, nil
}

// User is a person (or a bot) known to the broker, identified by email.
// Users are created at their first login, or by an operator issuing them a
// token; a grant may name an email that no user has yet (a vendor not yet
// seen).
type User struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`           // normalised: see NormalizeEmail
	Roles     []Role    `json:"roles,omitempty"` // sorted; none for a vendor
	Disabled  bool      `json:"disabled"`        // a disabled user's tokens are refused and sessions cut
	CreatedAt time.Time `json:"created_at"`
	// RolesCheckedAt is when a login last read Roles from the identity
	// provider; zero if none ever did (an operator's user). Tokens from
	// logins are refused once it is too old (apiserver RolesMaxAge).
	RolesCheckedAt time.Time `json:"roles_checked_at,omitzero"`
}

// HasRole reports whether u holds role r.
func (u *User) HasRole(r Role) bool { return u != nil && slices.Contains(u.Roles, r) }

// Vendor reports whether u holds no role: it may use grants made out to it
// and nothing else.
func (u *User) Vendor() bool { return u != nil && len(u.Roles) == 0 }

// UserActor is the audit actor naming a person: "user:EMAIL".
func UserActor(email string) string { return "user:" + email }

// UserTarget is the audit target naming a user: "user:EMAIL", the same
// text as UserActor.
func UserTarget(email string) string { return "user:" + email }

// maxEmailLen is the longest address SMTP carries (RFC 5321's path limit).
const maxEmailLen = 254

// NormalizeEmail trims and lowercases an email address and checks that it
// is a bare address (local@domain, no display name, no spaces). Emails
// identify users and grant subjects, so "Alice@Example.com " and
// "alice@example.com" must be one person.
func NormalizeEmail(s string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(s))
	if e == "" {
		return "", Errorf(EINVALID, "empty email address")
	}
	if len(e) > maxEmailLen {
		return "", Errorf(EINVALID, "invalid email address: longer than %d characters", maxEmailLen)
	}
	invalid := Errorf(EINVALID, "invalid email address %q: want name@domain", s)
	for _, r := range e {
		if r <= 0x20 || r == 0x7f || r == '<' || r == '>' || r == '"' || r == '(' || r == ')' || r == ',' || r == ';' || r == '\\' {
			return "", invalid
		}
	}
	local, domain, ok := strings.Cut(e, "@")
	if !ok || local == "" || len(local) > 64 || strings.Contains(domain, "@") {
		return "", invalid
	}
	for _, label := range strings.Split(domain, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", invalid
		}
	}
	if a, err := mail.ParseAddress(e); err != nil || a.Address != e {
		return "", invalid
	}
	return e, nil
}

// TokenKind says what a broker-issued token is for.
type TokenKind string

const (
	// TokenSession is a browser session of the portal, issued at login.
	TokenSession TokenKind = "session"
	// TokenCLI is the fieldpass CLI's token, issued at login.
	TokenCLI TokenKind = "cli"
	// TokenAutomation is issued by an operator for bots and bootstrap
	// (fieldpass-broker user token).
	TokenAutomation TokenKind = "automation"
)

// ValidateTokenKind checks k.
func ValidateTokenKind(k TokenKind) error {
	switch k {
	case TokenSession, TokenCLI, TokenAutomation:
		return nil
	}
	return Errorf(EINVALID, "invalid token kind %q: want session, cli or automation", k)
}

// Token is what the store keeps of a broker-issued token: never the token
// itself, which is shown once and stored only as its SHA-256.
type Token struct {
	ID         string    `json:"id"`
	UserID     string    `json:"user_id"`
	Email      string    `json:"email"`
	Kind       TokenKind `json:"kind"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"` // every token expires
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	RevokedBy  string    `json:"revoked_by,omitempty"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"` // updated at most once a minute
}

// Held refuses t when it no longer holds at now: revoked (forbidden) or
// past its expiry (expired). The words depend on who holds it: a person
// logs in again; a bot cannot, and its automation token is replaced by an
// operator on the broker host.
func (t *Token) Held(now time.Time) error {
	switch {
	case !t.RevokedAt.IsZero():
		return Errorf(EFORBIDDEN, "%s was revoked at %s: %s", t.kindName(), t.RevokedAt.UTC().Format(time.RFC3339), t.renewal())
	case !now.Before(t.ExpiresAt):
		return Errorf(EEXPIRED, "%s expired at %s: %s", t.kindName(), t.ExpiresAt.UTC().Format(time.RFC3339), t.renewal())
	}
	return nil
}

func (t *Token) kindName() string {
	switch t.Kind {
	case TokenAutomation:
		return "automation token of " + t.Email
	case TokenSession:
		return "portal session"
	}
	return "token"
}

// renewal says how the holder of t gets a new one.
func (t *Token) renewal() string {
	switch t.Kind {
	case TokenAutomation:
		return "an operator issues a new one on the broker host with fieldpass-broker user token --email " + t.Email + " --ttl DURATION, and the bot's FIELDPASS_TOKEN is set to it"
	case TokenSession:
		return "log in to the portal again"
	}
	return "log in again (fieldpass login)"
}

// TokenPrefix starts every broker-issued token (enrolment tokens have their
// own, EnrollmentTokenPrefix), so a token pasted in the wrong place or found
// in a log is recognisable.
const TokenPrefix = "fpt_"

// tokenBytes is a token's entropy: 256 bits.
const tokenBytes = 32

// FormatToken renders raw random bytes as a token: TokenPrefix followed by
// 43 characters of unpadded base64url.
func FormatToken(raw [tokenBytes]byte) string {
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
}

// CheckToken reports whether s has the shape of a broker-issued token, so
// that garbage is refused before any database round trip. Its message never
// repeats s: it may be a secret.
func CheckToken(s string) error {
	rest, ok := strings.CutPrefix(s, TokenPrefix)
	if ok && base64.RawURLEncoding.DecodedLen(len(rest)) == tokenBytes {
		if _, err := base64.RawURLEncoding.DecodeString(rest); err == nil {
			return nil
		}
	}
	return Errorf(EINVALID, "malformed token: want %s followed by 43 characters", TokenPrefix)
}

// Audit actions on users and their tokens.
const (
	AuditUserCreate  = "user.create"  // first login, or an operator issuing a token
	AuditUserRoles   = "user.roles"   // the roles from the identity provider changed
	AuditUserDisable = "user.disable" // tokens refused, sessions cut
	AuditUserEnable  = "user.enable"
	AuditTokenIssue  = "token.issue" // details: kind, expiry; never the token
	AuditTokenRevoke = "token.revoke"
	// A user bound to its identity provider login (issuer, subject) at its
	// first login, or moved to another after an administrator confirmed it.
	AuditUserIdentityBind = "user.identity_bind"
	// A login with a new subject arrived with a user's email: it gets
	// nothing of that user until an administrator confirms it.
	AuditUserIdentityClaim = "user.identity_claim"
	// An administrator confirmed that a claiming login owns the email.
	AuditUserIdentityConfirm = "user.identity_confirm"
)

// RolesFresh refuses the token t of u once u's roles were read from the
// identity provider longer ago than maxAge (negative: never): roles change
// at the provider, and only a login reads them. Users whose roles no login
// ever read (an operator's) and automation tokens are not the provider's to
// judge. The API and the portal ask it alike.
func (u *User) RolesFresh(t *Token, maxAge time.Duration, now time.Time) error {
	if maxAge < 0 || u.RolesCheckedAt.IsZero() || (t.Kind != TokenCLI && t.Kind != TokenSession) {
		return nil
	}
	if age := now.Sub(u.RolesCheckedAt); age > maxAge {
		return Errorf(EEXPIRED, "your roles were last checked with the identity provider %s ago, more than this broker allows (%s): log in again",
			FormatDuration(age.Round(time.Minute)), FormatDuration(maxAge))
	}
	return nil
}
