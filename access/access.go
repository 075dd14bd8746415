// Package access is what people may see and do: every operation a person
// asks for through the JSON API (apiserver) or the portal's pages (portal),
// with its rules applied in one place — roles, who sees whose grants,
// requests and sessions, grant limits, self-approval — so that the two
// edges can never disagree. The edges parse and render; they decide nothing.
//
// Every method takes the caller (fieldpass.Caller) and answers refusals from
// the error vocabulary: forbidden for a missing role, not_found for what the
// caller may not know exists.
package access

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/ratelimit"
)

// Config configures a Service. Zero values mean the defaults.
type Config struct {
	DB *postgres.DB
	// Sessions is this broker's session manager: an admin's end of a
	// session live here, or at the broker of the fleet holding it, cuts it
	// at once with the real byte counts (EndSessionAnywhere). Nil: ends are
	// written to the store, and the broker carrying the session follows
	// within a second.
	Sessions *broker.Sessions
	// Alerts receives vendor_grant_created, access_requested and
	// access_request_decided (default nil: alerts off).
	Alerts *alerts.Notifier
	// GrantLimits caps grant durations per role (zero: the defaults).
	GrantLimits fieldpass.GrantLimits
	// FourEyes is who must be a second person (grants.go; zero: FourEyesSelf).
	FourEyes FourEyes
	Logger   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Service applies the rules. It is safe for concurrent use.
type Service struct {
	cfg Config
	log *slog.Logger
	// requests limits access requests per user (grants.go): each lands in
	// the approvers' queue.
	requests *ratelimit.Keyed
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, log: cfg.Logger, requests: ratelimit.New(requestRate, requestBurst)}
}

// Now is the service's clock, for edges that show times relative to it.
func (s *Service) Now() time.Time { return s.cfg.Now() }

// loggedIn refuses a request with no caller: an edge wired without
// authentication.
func loggedIn(c *fieldpass.Caller) error {
	if c == nil || c.User == nil {
		return fieldpass.Errorf(fieldpass.EFORBIDDEN, "not logged in")
	}
	return nil
}

// Require refuses a caller holding none of roles.
func Require(c *fieldpass.Caller, roles ...fieldpass.Role) error {
	if err := loggedIn(c); err != nil {
		return err
	}
	for _, r := range roles {
		if c.User.HasRole(r) {
			return nil
		}
	}
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	return fieldpass.Errorf(fieldpass.EFORBIDDEN, "this needs the %s role", strings.Join(names, " or "))
}

// Operations that change nothing, named in the record of a refused
// attempt (Allow) as the audit actions name those that change something.
const (
	OpGrantList     = "grant.list"     // grants made out to someone
	OpSessionList   = "session.list"   // someone's sessions
	OpAuditRead     = "audit.read"     // the audit log and its chain's state
	OpDeviceHistory = "device.history" // a device's connectivity history
	OpStaleReport   = "report.stale"
	OpGrantsPage    = "grant.manage"  // the portal's grants page
	OpApprovals     = "request.queue" // the approvers' queue
	OpLiveSessions  = "session.live"  // who is connected now
)

// Allow is Require for an edge that checks roles before calling the
// service (the API's route table, a portal page): a refusal is put on the
// record like any refused operation (denied), op naming what was asked
// (an audit action, or one of the Op names above) and target what it
// acted on ("" for none).
func (s *Service) Allow(c *fieldpass.Caller, op, target string, roles ...fieldpass.Role) error {
	if err := Require(c, roles...); err != nil {
		return s.denied(c, op, target, "role_required", err)
	}
	return nil
}

// SeesAll reports whether c reads every device, grant and session: admins
// and auditors.
func SeesAll(c *fieldpass.Caller) bool {
	return c.User.HasRole(fieldpass.RoleAdmin) || c.User.HasRole(fieldpass.RoleAuditor)
}

// SeesAllRequests reports whether c reads every access request: those who
// decide them, and auditors.
func SeesAllRequests(c *fieldpass.Caller) bool {
	return c.User.HasRole(fieldpass.RoleApprover) || c.User.HasRole(fieldpass.RoleAdmin) ||
		c.User.HasRole(fieldpass.RoleAuditor)
}

// ownOnly narrows a list filter's person field to the caller unless c sees
// all: an empty *who becomes the caller, and anyone else's is refused with
// refusal, on the record as op on that person (reason not_own).
func (s *Service) ownOnly(c *fieldpass.Caller, op string, who *string, refusal string) error {
	if SeesAll(c) {
		return nil
	}
	if *who != "" && *who != c.User.Email {
		return s.denied(c, op, fieldpass.UserTarget(*who), "not_own", fieldpass.Errorf(fieldpass.EFORBIDDEN, "%s", refusal))
	}
	*who = c.User.Email
	return nil
}

// maxPage bounds the grants read to work out what a person may reach.
const maxPage = 1000

// DeviceAccess is a device as one caller sees it: the services their
// grants in force give on it now, and when the last of those grants ends.
type DeviceAccess struct {
	*fieldpass.Device
	Services  []string  // sorted; none for an admin or auditor without a grant
	GrantEnds time.Time // zero without a grant
}

// Devices lists the devices c may see, by name: every live device for
// admins and auditors; for everyone else those a grant in force now, made
// out to them, covers.
func (s *Service) Devices(ctx context.Context, c *fieldpass.Caller) ([]DeviceAccess, error) {
	if err := loggedIn(c); err != nil {
		return nil, err
	}
	devs, err := s.cfg.DB.Devices(ctx)
	if err != nil {
		return nil, err
	}
	grants, err := s.activeGrants(ctx, c)
	if err != nil {
		return nil, err
	}
	all := SeesAll(c)
	out := []DeviceAccess{}
	for _, d := range devs {
		v := access(d, grants)
		if len(v.Services) == 0 && !all {
			continue
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b DeviceAccess) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// Device is one device as c sees it. To a caller who may not see it, it
// does not exist.
func (s *Service) Device(ctx context.Context, c *fieldpass.Caller, name string) (DeviceAccess, error) {
	if err := loggedIn(c); err != nil {
		return DeviceAccess{}, err
	}
	if err := fieldpass.ValidateDeviceName(name); err != nil {
		return DeviceAccess{}, err
	}
	d, err := s.cfg.DB.Device(ctx, name)
	if err != nil {
		return DeviceAccess{}, err
	}
	grants, err := s.activeGrants(ctx, c)
	if err != nil {
		return DeviceAccess{}, err
	}
	v := access(d, grants)
	if len(v.Services) == 0 && !SeesAll(c) {
		return DeviceAccess{}, fieldpass.Errorf(fieldpass.ENOTFOUND, "device %s not found", name)
	}
	return v, nil
}

func (s *Service) activeGrants(ctx context.Context, c *fieldpass.Caller) ([]*fieldpass.Grant, error) {
	return s.cfg.DB.Grants(ctx, fieldpass.GrantFilter{Subject: c.User.Email, ActiveAt: s.cfg.Now(), Limit: maxPage})
}

func access(d *fieldpass.Device, grants []*fieldpass.Grant) DeviceAccess {
	v := DeviceAccess{Device: d}
	for _, g := range grants {
		if !g.Matches(d) {
			continue
		}
		v.Services = append(v.Services, g.Services...)
		if g.End.After(v.GrantEnds) {
			v.GrantEnds = g.End
		}
	}
	slices.Sort(v.Services)
	v.Services = slices.Compact(v.Services)
	return v
}
