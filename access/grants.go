package access

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/broker"
)

// GrantOption changes what CreateGrant accepts.
type GrantOption int

// AllowUnknown lets a grant name services that a device it names is known
// not to expose (the API's allow_unknown, the CLI's --allow-unknown): the
// service is to be added to the device's connector later.
const AllowUnknown GrantOption = 1

// CreateGrant creates g (admins only), no longer than the limit for its
// subject's roles, and tells operators when it is made out to a vendor. A
// grant naming a service that a device it names by name is known not to
// expose (its connector listed its services in its hello, and that one is
// not among them) is refused unless opts hold AllowUnknown: most often a
// typo, which would make a grant that lets no one in.
func (s *Service) CreateGrant(ctx context.Context, c *fieldpass.Caller, g fieldpass.Grant, opts ...GrantOption) (*fieldpass.Grant, error) {
	if err := Require(c, fieldpass.RoleAdmin); err != nil {
		return nil, s.denied(c, fieldpass.AuditGrantCreate, "", "role_required", err)
	}
	// Validate first: it normalises the subject the limit is looked up by.
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if !slices.Contains(opts, AllowUnknown) {
		if err := s.exposedServices(ctx, g); err != nil {
			return nil, err
		}
	}
	if err := s.fourEyes(c, g.Subject); err != nil {
		return nil, s.denied(c, fieldpass.AuditGrantCreate, fieldpass.UserTarget(g.Subject), "four_eyes", err)
	}
	max, err := s.maxGrantFor(ctx, g.Subject)
	if err != nil {
		return nil, err
	}
	out, err := s.cfg.DB.CreateGrant(ctx, fieldpass.UserActor(c.User.Email), g, max)
	if err != nil {
		return nil, err
	}
	s.log.Info("grant created", "grant", out.ID, "subject", out.Subject, "by", c.User.Email)
	if s.cfg.Alerts != nil && s.isVendor(ctx, out.Subject) {
		s.cfg.Alerts.Notify(alerts.Alert{Kind: alerts.VendorGrantCreated, At: s.cfg.Now(), Details: map[string]any{
			"grant": out.ID, "subject": out.Subject, "by": c.User.Email,
			"devices": out.Devices, "selector": out.Selector, "services": out.Services,
			"start": out.Start, "end": out.End, "reason": out.Reason, "ticket": out.Ticket,
		}})
	}
	return out, nil
}

// exposedServices refuses g if a device it names is known not to expose a
// service it grants. Devices whose services are unknown (no connector said:
// one too old to, or none connected yet) pass, as do label selectors,
// which are meant to cover devices to come.
func (s *Service) exposedServices(ctx context.Context, g fieldpass.Grant) error {
	if len(g.Devices) == 0 {
		return nil
	}
	devs, err := s.cfg.DB.DevicesNamed(ctx, g.Devices)
	if err != nil {
		return err
	}
	slices.SortFunc(devs, func(a, b *fieldpass.Device) int { return strings.Compare(a.Name, b.Name) })
	for _, d := range devs {
		if d.Services == nil {
			continue
		}
		var missing []string
		for _, svc := range g.Services {
			if !slices.Contains(d.Services, svc) {
				missing = append(missing, svc)
			}
		}
		if len(missing) > 0 {
			exposes := "no services"
			if len(d.Services) > 0 {
				exposes = strings.Join(d.Services, ", ")
			}
			return fieldpass.Errorf(fieldpass.EINVALID,
				"device %s does not expose %s (its connector exposes %s): check the service name; to grant a service the device will expose later, add --allow-unknown (API: allow_unknown)",
				d.Name, strings.Join(missing, ", "), exposes)
		}
	}
	return nil
}

// Grants lists grants, newest first: any for admins and auditors, the
// caller's own for everyone else (f.Subject naming another is refused).
func (s *Service) Grants(ctx context.Context, c *fieldpass.Caller, f fieldpass.GrantFilter) ([]*fieldpass.Grant, error) {
	if err := loggedIn(c); err != nil {
		return nil, err
	}
	if err := s.ownOnly(c, OpGrantList, &f.Subject, "you may list only grants made out to you"); err != nil {
		return nil, err
	}
	gs, err := s.cfg.DB.Grants(ctx, f)
	if gs == nil && err == nil {
		gs = []*fieldpass.Grant{}
	}
	return gs, err
}

// RevokeGrant revokes a grant now (admins only), with why (optional:
// kept on the grant and in the audit event). Every broker hears of it
// from the database and ends the sessions it covered within a second.
func (s *Service) RevokeGrant(ctx context.Context, c *fieldpass.Caller, id, reason string) (*fieldpass.Grant, error) {
	if err := Require(c, fieldpass.RoleAdmin); err != nil {
		return nil, s.denied(c, fieldpass.AuditGrantRevoke, "grant:"+id, "role_required", err)
	}
	g, err := s.cfg.DB.RevokeGrantBecause(ctx, fieldpass.UserActor(c.User.Email), id, reason)
	if err != nil {
		return nil, err
	}
	s.log.Info("grant revoked", "grant", g.ID, "subject", g.Subject, "by", c.User.Email, "reason", reason)
	return g, nil
}

// maxGrantFor is the longest grant the subject email may hold: the limit
// for their roles, or a vendor's if no such user exists yet.
func (s *Service) maxGrantFor(ctx context.Context, email string) (time.Duration, error) {
	u, err := s.cfg.DB.User(ctx, email)
	switch {
	case fieldpass.ErrorCode(err) == fieldpass.ENOTFOUND:
		return s.cfg.GrantLimits.Max(nil), nil
	case err != nil:
		return 0, err
	}
	return s.cfg.GrantLimits.Max(u.Roles), nil
}

// MaxGrant is the longest grant c may ask for or hold.
func (s *Service) MaxGrant(c *fieldpass.Caller) time.Duration {
	return s.cfg.GrantLimits.Max(c.User.Roles)
}

// isVendor reports whether email has no role (or no account yet): an
// outside vendor, whose grants operators want to hear about. When the user
// cannot be read it says yes: a spurious alert beats a missed one.
func (s *Service) isVendor(ctx context.Context, email string) bool {
	u, err := s.cfg.DB.User(ctx, email)
	if err != nil {
		return true
	}
	return len(u.Roles) == 0
}

// CreateRequest files an access request by the caller, for themselves. It
// is refused up front if it asks for longer than a grant to the caller may
// last, so that no approver is asked to approve what cannot be granted.
// Access requests per user: a burst of requestBurst, refilled at
// requestRate a second (20 an hour).
const (
	requestRate  = 20.0 / 3600
	requestBurst = 20
)

func (s *Service) CreateRequest(ctx context.Context, c *fieldpass.Caller, r fieldpass.AccessRequest) (*fieldpass.AccessRequest, error) {
	if err := loggedIn(c); err != nil {
		return nil, err
	}
	if r.Duration <= 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid duration: want a positive duration such as 4h")
	}
	if max := s.MaxGrant(c); r.Duration > max {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "requested duration %s is longer than the %s a grant to you may last: ask for %s or less", fieldpass.FormatDuration(r.Duration), fieldpass.FormatDuration(max), fieldpass.FormatDuration(max))
	}
	if !s.requests.Allow(c.User.ID) {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "too many access requests from you (at most %d an hour): try again later", int(requestRate*3600))
	}
	r.Requester = c.User.Email
	create := s.cfg.DB.CreateRequest
	if !SeesAll(c) {
		// Whether a device exists is for those who may see it: to anyone
		// else, a request for a missing device is filed like any other
		// (approvers see no such device and deny it), so the answer
		// tells nothing (issue 10).
		create = s.cfg.DB.CreateRequestAnyDevice
	}
	out, err := create(ctx, r)
	if err != nil {
		return nil, err
	}
	s.log.Info("access request filed", "request", out.ID, "requester", out.Requester, "device", out.Device, "service", out.Service)
	if s.cfg.Alerts != nil {
		s.cfg.Alerts.Notify(alerts.Alert{Kind: alerts.AccessRequested, At: s.cfg.Now(), Device: out.Device, Details: map[string]any{
			"request": out.ID, "requester": out.Requester, "service": out.Service,
			"duration": fieldpass.FormatDuration(out.Duration), "reason": out.Reason, "ticket": out.Ticket,
			"decide": "fieldpass request approve|deny " + out.ID + " [--reason R], or the portal's Approvals page",
		}})
	}
	return out, nil
}

// Requests lists access requests, newest first: every request for
// approvers, admins and auditors (only their own with mine), the caller's
// own for everyone else.
func (s *Service) Requests(ctx context.Context, c *fieldpass.Caller, f fieldpass.RequestFilter, mine bool) ([]*fieldpass.AccessRequest, error) {
	if err := loggedIn(c); err != nil {
		return nil, err
	}
	if mine || !SeesAllRequests(c) {
		f.Requester = c.User.Email
	}
	rs, err := s.cfg.DB.Requests(ctx, f)
	if rs == nil && err == nil {
		rs = []*fieldpass.AccessRequest{}
	}
	return rs, err
}

// Request is one access request, to its requester or to an approver, admin
// or auditor. To anyone else it does not exist.
func (s *Service) Request(ctx context.Context, c *fieldpass.Caller, id string) (*fieldpass.AccessRequest, error) {
	if err := loggedIn(c); err != nil {
		return nil, err
	}
	req, err := s.cfg.DB.Request(ctx, id)
	if err == nil && req.Requester != c.User.Email && !SeesAllRequests(c) {
		err = fieldpass.Errorf(fieldpass.ENOTFOUND, "request %s not found", id)
	}
	return req, err
}

// DecideRequest approves or denies a pending request (approvers and
// admins). Approval creates the grant, no longer than the limit for the
// requester's roles. The store refuses a decision on one's own request
// (forbidden) and a second decision (conflict).
func (s *Service) DecideRequest(ctx context.Context, c *fieldpass.Caller, id string, approve bool, comment string) (*fieldpass.AccessRequest, *fieldpass.Grant, error) {
	if err := Require(c, fieldpass.RoleApprover, fieldpass.RoleAdmin); err != nil {
		return nil, nil, s.denied(c, decision(approve), "request:"+id, "role_required", err)
	}
	cur, err := s.cfg.DB.Request(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	max, err := s.maxGrantFor(ctx, cur.Requester)
	if err != nil {
		return nil, nil, err
	}
	req, g, err := s.cfg.DB.DecideRequest(ctx, c.User.Email, cur.ID, approve, max, comment)
	if fieldpass.ErrorCode(err) == fieldpass.EFORBIDDEN {
		reason := "forbidden"
		if cur.Requester == c.User.Email {
			reason = "self_approval"
		}
		return nil, nil, s.denied(c, decision(approve), "request:"+cur.ID, reason, err)
	}
	if err != nil {
		return nil, nil, err
	}
	if g != nil {
		s.log.Info("access request approved", "request", req.ID, "grant", g.ID, "requester", req.Requester, "by", c.User.Email)
	} else {
		s.log.Info("access request denied", "request", req.ID, "requester", req.Requester, "by", c.User.Email)
	}
	if s.cfg.Alerts != nil {
		details := map[string]any{"request": req.ID, "requester": req.Requester, "service": req.Service,
			"status": string(req.Status), "by": c.User.Email, "comment": req.Comment}
		if g != nil {
			details["grant"], details["until"] = g.ID, g.End
		}
		s.cfg.Alerts.Notify(alerts.Alert{Kind: alerts.AccessRequestDecided, At: s.cfg.Now(), Device: req.Device, Details: details})
	}
	return req, g, nil
}

// denied puts a refused operation (a missing role, a decision on one's own
// request) on the record through the session manager's coalescing denial
// log, and returns err unchanged: who (the caller), what (op, target), why
// (reason, and the message the caller saw) and from where (the caller's
// client address). reason (role_required, self_approval) is for the
// record only. Without a session manager (tests, tools) it is only logged.
func (s *Service) denied(c *fieldpass.Caller, op, target, reason string, err error) error {
	d := broker.Denial{Operation: op, Target: target, Reason: fieldpass.DenyReason(reason),
		Message: fieldpass.ErrorMessage(err)}
	if c != nil && c.User != nil {
		d.User, d.Client = c.User.Email, c.Client
	}
	if s.cfg.Sessions != nil {
		s.cfg.Sessions.Denied(d)
	} else {
		s.log.Info(op+" refused", "user", d.User, "target", target, "client", d.Client, "err", err)
	}
	return err
}

func decision(approve bool) string {
	if approve {
		return fieldpass.AuditRequestApprove
	}
	return fieldpass.AuditRequestDeny
}

// FourEyes is the four-eyes rule: access to a device is given by a second
// person. One rule for grants made directly and for approved requests.
type FourEyes string

const (
	// FourEyesSelf (the default): nobody gives themselves access; an admin
	// may grant others directly, and decide others' requests.
	FourEyesSelf FourEyes = "self"
	// FourEyesAll: every grant needs a second person: none is made
	// directly, only by approving another person's request.
	FourEyesAll FourEyes = "all"
)

// ParseFourEyes reads the setting (fieldpass-broker serve --four-eyes).
func ParseFourEyes(s string) (FourEyes, error) {
	switch f := FourEyes(s); f {
	case FourEyesSelf, FourEyesAll:
		return f, nil
	}
	return "", fieldpass.Errorf(fieldpass.EINVALID, "invalid four-eyes setting %q: want self (nobody grants themselves) or all (every grant through an approved request)", s)
}

// fourEyes refuses a grant c would make directly for subject. The store
// refuses a decision on one's own request; this is the same rule for the
// grant form.
func (s *Service) fourEyes(c *fieldpass.Caller, subject string) error {
	if s.cfg.FourEyes == FourEyesAll {
		return fieldpass.Errorf(fieldpass.EFORBIDDEN,
			"this broker requires a second person for every grant: ask %s to file a request (fieldpass request create), then approve it", subject)
	}
	if subject == c.User.Email {
		return fieldpass.Errorf(fieldpass.EFORBIDDEN,
			"you cannot grant yourself access: file a request (fieldpass request create) for another approver or admin to decide")
	}
	return nil
}
