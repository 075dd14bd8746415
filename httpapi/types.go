package httpapi

import (
	"time"

	"github.com/fieldpass/fieldpass"
)

// The JSON bodies of the API, shared by the handlers and the Go client.

// Me is GET /api/v1/me.
type Me struct {
	Email     string           `json:"email"`
	Roles     []fieldpass.Role `json:"roles"`
	TokenKind string           `json:"token_kind"`
	ExpiresAt time.Time        `json:"expires_at"`
}

// DeviceView is one row of GET /api/v1/devices: a device the caller may
// reach now (admins and auditors see all), with the end of the grant that
// lets them.
type DeviceView struct {
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	State     string            `json:"state"`
	Online    bool              `json:"online"`
	LastSeen  time.Time         `json:"last_seen,omitzero"`
	Services  []string          `json:"services,omitempty"` // granted services; "*" none listed
	GrantEnds time.Time         `json:"grant_ends,omitzero"`
	// ExposedServices, for admins and auditors only, are the services the
	// device's connector said it exposes (names only); omitted while no
	// connector has said.
	ExposedServices []string `json:"exposed_services,omitempty"`
}

// GrantCreate is POST /api/v1/grants. Either Duration or End; Start
// defaults to now.
type GrantCreate struct {
	Subject  string            `json:"subject"`
	Devices  []string          `json:"devices,omitempty"`
	Selector map[string]string `json:"selector,omitempty"`
	Services []string          `json:"services"`
	Start    time.Time         `json:"start,omitzero"`
	End      time.Time         `json:"end,omitzero"`
	Duration string            `json:"duration,omitempty"` // Go duration, e.g. "4h"
	Reason   string            `json:"reason"`
	Ticket   string            `json:"ticket,omitempty"`
	// AllowUnknown lets Devices name devices not enrolled (yet): without
	// it such a grant is refused, since a typo would make it useless.
	AllowUnknown bool `json:"allow_unknown,omitempty"`
}

// SessionEnd is the optional body of POST /api/v1/sessions/{id}/end.
type SessionEnd struct {
	Reason string `json:"reason,omitempty"` // why, in the admin's words; recorded in the audit log
}

// RequestCreate is POST /api/v1/requests.
type RequestCreate struct {
	Device   string `json:"device"`
	Service  string `json:"service"`
	Duration string `json:"duration"` // Go duration
	Reason   string `json:"reason"`
	Ticket   string `json:"ticket,omitempty"`
}

// GrantRevoke is the optional body of POST /api/v1/grants/{id}/revoke:
// why, kept on the grant (revoke_reason) and in the audit event.
type GrantRevoke struct {
	Reason string `json:"reason,omitempty"`
}

// RequestDecision is the optional body of POST /api/v1/requests/{id}/approve
// and /deny: the approver's comment, shown to the requester and audited.
type RequestDecision struct {
	Comment string `json:"comment,omitempty"`
}

// DeviceLoginStart is the answer to POST /api/v1/login/device (RFC 8628
// shaped): the CLI shows UserCode and VerificationURI, then polls with
// DeviceCode every Interval seconds.
type DeviceLoginStart struct {
	DeviceCode      string `json:"device_code"`
	UserCode        string `json:"user_code"`
	VerificationURI string `json:"verification_uri"`
	ExpiresIn       int    `json:"expires_in"`
	Interval        int    `json:"interval"`
}

// DeviceLoginPoll is the body of POST /api/v1/login/device/token.
type DeviceLoginPoll struct {
	DeviceCode string `json:"device_code"`
}

// DeviceLoginToken is a successful poll. Until then the poll answers 400
// with code "authorization_pending", "slow_down", "expired" or "denied".
type DeviceLoginToken struct {
	Token     string           `json:"token"`
	Email     string           `json:"email"`
	Roles     []fieldpass.Role `json:"roles"`
	ExpiresAt time.Time        `json:"expires_at"`
}

// Query parameters of the list endpoints, as the Go client sends them.

// GrantQuery: GET /api/v1/grants?subject=&device=&active=true
type GrantQuery struct {
	Subject string
	Device  string
	Active  bool // only grants active now
}

// RequestQuery: GET /api/v1/requests?status=&mine=true
type RequestQuery struct {
	Status string // pending, approved, denied; "" for all
	Mine   bool   // only the caller's own requests
}

// SessionQuery: GET /api/v1/sessions?device=&user=&since=RFC3339&open=true&limit=
type SessionQuery struct {
	Device string
	User   string
	Since  time.Time
	Open   bool
	Limit  int
}

// AuditQuery: GET /api/v1/audit?since=RFC3339&actor=&action=&target=&limit=
type AuditQuery struct {
	Since  time.Time
	Actor  string
	Action string
	Target string
	Limit  int
}
