package apiserver

// The people's API: who am I, which devices may I reach, grants, access
// requests, sessions and the audit log. routes.go holds the role gates that
// apply to a whole route; the handlers here narrow further by caller (a
// vendor sees only what is made out to them).
//
// Visibility, by role (DESIGN.md's roles table):
//
//	what       admin  auditor  approver  engineer/vendor
//	devices    all    all      granted   granted
//	grants     all    all      own       own
//	requests   all    all      all       own
//	sessions   all    all      own       own
//	audit      all    all      -         -
//
// "own" means made out to, requested by, or opened by the caller's email.
// Someone else's request or session asked for by id answers not_found, as
// one that does not exist would.

import (
	"cmp"
	"net/http"
	"slices"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
)

// Body size limits: generous for what each body may hold (a grant names at
// most 256 devices), small enough that nobody can make us buffer much.
const (
	maxGrantBody   = 64 << 10
	maxRequestBody = 8 << 10
)

// caller returns the authenticated caller, answering 401 and returning nil
// when there is none (a route wired without authenticate).
func (s *Server) caller(w http.ResponseWriter, r *http.Request) *fieldpass.Caller {
	c := fieldpass.CallerFromContext(r.Context())
	if c == nil || c.User == nil {
		s.writeUnauthorized(w, r, fieldpass.Errorf(fieldpass.EINVALID, "not logged in"))
		return nil
	}
	return c
}

// seesAll reports whether c reads every grant, session and device: admins
// and auditors.
func seesAll(c *fieldpass.Caller) bool {
	return c.User.HasRole(fieldpass.RoleAdmin) || c.User.HasRole(fieldpass.RoleAuditor)
}

// ownOnly narrows a list filter's user field to the caller unless c sees
// all: an empty *who becomes the caller, and anyone else's is refused with
// refusal (EFORBIDDEN).
func ownOnly(c *fieldpass.Caller, who *string, refusal string) error {
	if seesAll(c) {
		return nil
	}
	if *who != "" && *who != c.User.Email {
		return fieldpass.Errorf(fieldpass.EFORBIDDEN, "%s", refusal)
	}
	*who = c.User.Email
	return nil
}

// handleMe answers who the caller is, as the broker sees them.
func (s *Server) handleMe() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		me := httpapi.Me{Email: c.User.Email, Roles: c.User.Roles}
		if me.Roles == nil {
			me.Roles = []fieldpass.Role{}
		}
		if c.Token != nil {
			me.TokenKind, me.ExpiresAt = string(c.Token.Kind), c.Token.ExpiresAt
		}
		writeJSON(w, http.StatusOK, me)
	}
}

// handleDevices lists the devices the caller may see: every live device for
// admins and auditors; for everyone else the devices that a grant in force
// now, made out to them, covers. Each row carries the services the caller's
// grants give on it and when the last of those grants ends.
func (s *Server) handleDevices() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		ctx := r.Context()
		devs, err := s.cfg.DB.Devices(ctx)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		grants, err := s.cfg.DB.Grants(ctx, fieldpass.GrantFilter{Subject: c.User.Email, ActiveAt: s.cfg.Now(), Limit: maxPage})
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		all := seesAll(c)
		out := []httpapi.DeviceView{}
		for _, d := range devs {
			v := httpapi.DeviceView{
				Name:     d.Name,
				Labels:   d.Labels,
				State:    string(d.State),
				Online:   d.Presence.Online,
				LastSeen: d.Presence.LastSeen,
			}
			for _, g := range grants {
				if !g.Matches(d) {
					continue
				}
				v.Services = append(v.Services, g.Services...)
				if g.End.After(v.GrantEnds) {
					v.GrantEnds = g.End
				}
			}
			if len(v.Services) == 0 && !all {
				continue
			}
			slices.Sort(v.Services)
			v.Services = slices.Compact(v.Services)
			out = append(out, v)
		}
		slices.SortFunc(out, func(a, b httpapi.DeviceView) int { return cmp.Compare(a.Name, b.Name) })
		writeJSON(w, http.StatusOK, out)
	}
}
