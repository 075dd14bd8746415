package fieldpass

import (
	"slices"
	"time"
)

// Grant gives one subject access to some devices' services for a window of
// time. Every grant ends: End is required, and no grant is longer than the
// maximum that applies to its subject (GrantLimits).
//
// A grant names its devices in exactly one way: by name (Devices) or by a
// label selector (Selector, every k=v must match), so a grant over
// "site=north" also covers a device enrolled there tomorrow.
type Grant struct {
	ID string `json:"id"`
	// Subject is the email the grant is made out to: a user, or a vendor not
	// seen yet. Normalised (NormalizeEmail).
	Subject   string            `json:"subject"`
	Devices   []string          `json:"devices,omitempty"`
	Selector  map[string]string `json:"selector,omitempty"`
	Services  []string          `json:"services"`
	Start     time.Time         `json:"start"` // inclusive
	End       time.Time         `json:"end"`   // exclusive
	Reason    string            `json:"reason"`
	Ticket    string            `json:"ticket,omitempty"`
	CreatedBy string            `json:"created_by"` // an audit actor
	CreatedAt time.Time         `json:"created_at"`
	RevokedAt time.Time         `json:"revoked_at,omitzero"`
	RevokedBy string            `json:"revoked_by,omitempty"`
	// RevokeReason is why it was revoked, in the revoker's words (optional).
	RevokeReason string `json:"revoke_reason,omitempty"`
}

const (
	maxGrantDevices  = 256
	maxGrantServices = 32
	maxReasonLen     = 1000
	maxTicketLen     = 200
)

// HardMaxGrantDuration bounds every grant and access request, whatever the
// configured limits say.
const HardMaxGrantDuration = 366 * 24 * time.Hour

// Validate checks a grant's shape: subject, exactly one of devices and
// selector, services, a window that ends after it starts, a reason. It
// normalises Subject and sorts and deduplicates Devices and Services. It
// does not check the duration against a limit; the store does that with the
// limit that applies.
func (g *Grant) Validate() error {
	subject, err := NormalizeEmail(g.Subject)
	if err != nil {
		return Errorf(EINVALID, "grant subject: %s", ErrorMessage(err))
	}
	g.Subject = subject
	switch {
	case len(g.Devices) > 0 && len(g.Selector) > 0:
		return Errorf(EINVALID, "a grant names devices or a label selector, not both")
	case len(g.Devices) == 0 && len(g.Selector) == 0:
		return Errorf(EINVALID, "a grant needs devices (by name) or a label selector (k=v)")
	case len(g.Devices) > maxGrantDevices:
		return Errorf(EINVALID, "too many devices (%d, at most %d): use a label selector", len(g.Devices), maxGrantDevices)
	}
	for _, d := range g.Devices {
		if err := ValidateDeviceName(d); err != nil {
			return err
		}
	}
	g.Devices = sortedSet(g.Devices)
	if len(g.Selector) > 0 {
		if err := ValidateLabels(g.Selector); err != nil {
			return Errorf(EINVALID, "selector: %s", ErrorMessage(err))
		}
	} else {
		g.Selector = nil
	}
	if len(g.Services) == 0 {
		return Errorf(EINVALID, "a grant needs at least one service (e.g. ssh)")
	}
	if len(g.Services) > maxGrantServices {
		return Errorf(EINVALID, "too many services (%d, at most %d)", len(g.Services), maxGrantServices)
	}
	for _, s := range g.Services {
		if err := ValidateServiceName(s); err != nil {
			return err
		}
	}
	g.Services = sortedSet(g.Services)
	if g.Start.IsZero() {
		return Errorf(EINVALID, "a grant needs a start time")
	}
	if g.End.IsZero() {
		return Errorf(EINVALID, "a grant needs an end time: every grant ends")
	}
	if !g.End.After(g.Start) {
		return Errorf(EINVALID, "grant ends (%s) before it starts (%s)", g.End.UTC().Format(time.RFC3339), g.Start.UTC().Format(time.RFC3339))
	}
	if d := g.End.Sub(g.Start); d > HardMaxGrantDuration {
		// Not d itself: a far end (9999-12-31) saturates it into a
		// number of hours nobody can read.
		return Errorf(EINVALID, "grant would end at %s, more than the %s after its start any grant may last",
			g.End.UTC().Format(time.RFC3339), FormatDuration(HardMaxGrantDuration))
	}
	if err := ValidateReason(g.Reason); err != nil {
		return err
	}
	return ValidateTicket(g.Ticket)
}

// ValidateReason checks the reason of a grant or request: required, one
// line of at most 1000 characters.
func ValidateReason(s string) error {
	if s == "" {
		return Errorf(EINVALID, "a reason is required")
	}
	return validateLine("reason", s, maxReasonLen)
}

// ValidateOptionalReason checks an optional reason (why a grant was revoked,
// why a request was denied): one line of at most 1000 characters.
func ValidateOptionalReason(s string) error { return validateLine("reason", s, maxReasonLen) }

// ValidateTicket checks an optional ticket reference.
func ValidateTicket(s string) error { return validateLine("ticket", s, maxTicketLen) }

func validateLine(what, s string, max int) error {
	if len(s) > max {
		return Errorf(EINVALID, "%s longer than %d bytes", what, max)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return Errorf(EINVALID, "%s has a control character", what)
		}
	}
	return nil
}

func sortedSet(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// Revoked reports whether the grant was revoked.
func (g *Grant) Revoked() bool { return !g.RevokedAt.IsZero() }

// ActiveAt reports whether the grant is in force at t: not revoked by then,
// and Start <= t < End.
func (g *Grant) ActiveAt(t time.Time) bool {
	if g.Revoked() && !t.Before(g.RevokedAt) {
		return false
	}
	return !t.Before(g.Start) && t.Before(g.End)
}

// Matches reports whether the grant names d: by name, or by its selector
// (every selector label present on d with the same value).
func (g *Grant) Matches(d *Device) bool {
	if d == nil {
		return false
	}
	if len(g.Devices) > 0 {
		return slices.Contains(g.Devices, d.Name)
	}
	if len(g.Selector) == 0 {
		return false // an empty selector selects nothing, never everything
	}
	for k, v := range g.Selector {
		if got, ok := d.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Covers reports whether the grant lets its subject reach service on d at
// t. It looks at the grant alone: whether the device is active and the user
// enabled is for the caller to check.
func (g *Grant) Covers(d *Device, service string, at time.Time) bool {
	return g.ActiveAt(at) && slices.Contains(g.Services, service) && g.Matches(d)
}

// GrantLimits caps how long a grant may last, by its subject's roles. The
// zero value means the defaults.
type GrantLimits struct {
	// Vendor applies to subjects with no role (and to emails not seen yet).
	// Default DefaultVendorMaxGrant.
	Vendor time.Duration
	// ByRole applies to subjects holding the role; a subject with several
	// roles gets the longest. A role not listed gets DefaultMaxGrant.
	ByRole map[Role]time.Duration
}

const (
	// DefaultMaxGrant is the default longest grant for a user with a role.
	DefaultMaxGrant = 30 * 24 * time.Hour
	// DefaultVendorMaxGrant is the default longest grant for a vendor.
	DefaultVendorMaxGrant = 7 * 24 * time.Hour
)

// Max returns the longest grant allowed to a subject holding roles (none
// for a vendor), never more than HardMaxGrantDuration.
func (l GrantLimits) Max(roles []Role) time.Duration {
	var longest time.Duration
	if len(roles) == 0 {
		longest = l.Vendor
		if longest <= 0 {
			longest = DefaultVendorMaxGrant
		}
	}
	for _, r := range roles {
		d, ok := l.ByRole[r]
		if !ok || d <= 0 {
			d = DefaultMaxGrant
		}
		longest = max(longest, d)
	}
	return min(longest, HardMaxGrantDuration)
}

// RequestStatus is where an access request stands.
type RequestStatus string

const (
	RequestPending  RequestStatus = "pending"
	RequestApproved RequestStatus = "approved"
	RequestDenied   RequestStatus = "denied"
)

// AccessRequest is a person asking for access to one device's service for
// a while. An approver who is not the requester approves it, which creates
// the grant (starting at approval), or denies it. A request is decided once.
type AccessRequest struct {
	ID        string        `json:"id"`
	Requester string        `json:"requester"` // email
	Device    string        `json:"device"`
	Service   string        `json:"service"`
	Duration  time.Duration `json:"duration"`
	Reason    string        `json:"reason"`
	Ticket    string        `json:"ticket,omitempty"`
	CreatedAt time.Time     `json:"created_at"`
	Status    RequestStatus `json:"status"`
	DecidedBy string        `json:"decided_by,omitempty"` // the approver's email
	DecidedAt time.Time     `json:"decided_at,omitzero"`
	GrantID   string        `json:"grant_id,omitempty"` // set when approved
	Comment   string        `json:"comment,omitempty"`  // the approver's, with the decision
}

// Validate checks a new request and normalises its requester.
func (r *AccessRequest) Validate() error {
	email, err := NormalizeEmail(r.Requester)
	if err != nil {
		return Errorf(EINVALID, "requester: %s", ErrorMessage(err))
	}
	r.Requester = email
	if err := ValidateDeviceName(r.Device); err != nil {
		return err
	}
	if err := ValidateServiceName(r.Service); err != nil {
		return err
	}
	if r.Duration < time.Minute {
		return Errorf(EINVALID, "requested duration %s: want at least 1m", FormatDuration(r.Duration))
	}
	if r.Duration > HardMaxGrantDuration {
		return Errorf(EINVALID, "requested duration %s is longer than the %s any grant may last", FormatDuration(r.Duration), FormatDuration(HardMaxGrantDuration))
	}
	if err := ValidateReason(r.Reason); err != nil {
		return err
	}
	return ValidateTicket(r.Ticket)
}

// Audit actions on grants and access requests.
const (
	AuditGrantCreate    = "grant.create"
	AuditGrantRevoke    = "grant.revoke"
	AuditRequestCreate  = "request.create"
	AuditRequestApprove = "request.approve" // in the transaction that creates the grant
	AuditRequestDeny    = "request.deny"
)

// GrantFilter selects grants for a store's Grants. Zero fields select
// everything. It is domain vocabulary, not the store's, so that the API,
// the broker and the CLI can ask for grants without importing the store.
type GrantFilter struct {
	Subject string // made out to this email
	// Device selects grants that name the live device with this name, or
	// whose selector matches its labels now.
	Device string
	// ActiveAt selects grants in force at this time: started, not ended,
	// not revoked.
	ActiveAt time.Time
	// Limit is the most grants returned, newest first. Default and maximum
	// 1000.
	Limit int
}

// RequestFilter selects access requests for a store's Requests. Zero
// fields select everything.
type RequestFilter struct {
	Requester string
	Status    RequestStatus
	// Limit is the most requests returned, newest first. Default and
	// maximum 1000.
	Limit int
}
