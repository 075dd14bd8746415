package apiserver

import (
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/httpapi"
)

// grantFromBody turns a httpapi.GrantCreate into a grant starting at its Start (now
// if zero) and ending at End, or Duration after the start: exactly one of
// them. Everything else is checked by Grant.Validate in the store.
func grantFromBody(b httpapi.GrantCreate, now time.Time) (fieldpass.Grant, error) {
	g := fieldpass.Grant{
		Subject:  b.Subject,
		Devices:  b.Devices,
		Selector: b.Selector,
		Services: b.Services,
		Start:    b.Start,
		End:      b.End,
		Reason:   b.Reason,
		Ticket:   b.Ticket,
	}
	if g.Start.IsZero() {
		g.Start = now
	}
	switch {
	case b.Duration != "" && !b.End.IsZero():
		return g, fieldpass.Errorf(fieldpass.EINVALID, "give a duration or an end time, not both")
	case b.Duration == "" && b.End.IsZero():
		return g, fieldpass.Errorf(fieldpass.EINVALID, "a grant needs a duration or an end time: every grant ends")
	case b.Duration != "":
		d, err := fieldpass.ParsePositiveDuration("duration", b.Duration)
		if err != nil {
			return g, err
		}
		g.End = g.Start.Add(d)
	}
	return g, nil
}

// handleGrantCreate creates a grant (admins: routes.go), no longer than the
// limit for its subject's roles.
func (s *Server) handleGrantCreate() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		var body httpapi.GrantCreate
		if err := decodeJSON(w, r, maxGrantBody, &body); err != nil {
			s.writeError(w, r, err)
			return
		}
		g, err := grantFromBody(body, s.cfg.Now())
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		// Checked on a grant otherwise valid: a malformed one is told
		// what is wrong with it first.
		if v := g; !body.AllowUnknown && v.Validate() == nil {
			if err := s.knownDevices(r, g.Devices); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		var opts []access.GrantOption
		if body.AllowUnknown {
			opts = append(opts, access.AllowUnknown)
		}
		out, err := s.access.CreateGrant(r.Context(), c, g, opts...)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, out)
	}
}

// handleGrantList lists grants, newest first: all of them for admins and
// auditors, the caller's own for everyone else. Query: subject, device,
// active=true, limit.
func (s *Server) handleGrantList() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		q := newQuery(r)
		f := fieldpass.GrantFilter{
			Subject: q.email("subject"),
			Device:  q.device("device"),
			Limit:   q.limit(),
		}
		active := q.boolean("active")
		if q.err != nil {
			s.writeError(w, r, q.err)
			return
		}
		if active {
			f.ActiveAt = s.cfg.Now()
		}
		gs, err := s.access.Grants(r.Context(), c, f)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, gs)
	}
}

// handleGrantRevoke revokes a grant now (admins: routes.go). Running
// brokers hear of it from the database and cut its sessions.
func (s *Server) handleGrantRevoke() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		var body httpapi.GrantRevoke
		if r.ContentLength != 0 {
			if err := decodeJSON(w, r, maxRequestBody, &body); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		g, err := s.access.RevokeGrant(r.Context(), c, chi.URLParam(r, "id"), body.Reason)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, g)
	}
}

// knownDevices refuses a grant naming devices that are not enrolled (or
// were decommissioned): most often a typo, which would make a grant that
// never lets anyone in. allow_unknown is the way to grant a device that
// will be enrolled later. Label selectors are not checked: they are meant
// to cover devices to come.
func (s *Server) knownDevices(r *http.Request, names []string) error {
	if len(names) == 0 {
		return nil
	}
	unknown, err := s.cfg.DB.UnknownDevices(r.Context(), names)
	if err != nil {
		return err
	}
	if len(unknown) > 5 {
		unknown = append(unknown[:5], "...")
	}
	if len(unknown) > 0 {
		return fieldpass.Errorf(fieldpass.EINVALID,
			"no enrolled device named %s: check the name (fieldpass devices lists them); to grant a device that will be enrolled later, add --allow-unknown (API: allow_unknown)",
			strings.Join(unknown, ", "))
	}
	return nil
}
