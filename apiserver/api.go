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
	"net/http"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
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

// handleDevices lists the devices the caller may see (access.Devices), each
// with the services the caller's grants give on it and when the last of
// those grants ends.
func (s *Server) handleDevices() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		devs, err := s.access.Devices(r.Context(), c)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		out := make([]httpapi.DeviceView, len(devs))
		for i, d := range devs {
			out[i] = httpapi.DeviceView{
				Name:      d.Name,
				Labels:    d.Labels,
				State:     string(d.State),
				Online:    d.Presence.Online,
				LastSeen:  d.Presence.LastSeen,
				Services:  d.Services,
				GrantEnds: d.GrantEnds,
			}
			if access.SeesAll(c) {
				out[i].ExposedServices = d.Device.Services
			}
		}
		writeJSON(w, http.StatusOK, out)
	}
}
