package apiserver

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
)

// handleSessionList lists sessions, newest first: all of them for admins
// and auditors, the caller's own for everyone else. Query: device, user,
// since (RFC 3339), open=true, limit.
func (s *Server) handleSessionList() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		q := newQuery(r)
		f := fieldpass.SessionFilter{
			Device: q.device("device"),
			User:   q.email("user"),
			Since:  q.time("since"),
			Open:   q.boolean("open"),
			Limit:  q.limit(),
		}
		if q.err != nil {
			s.writeError(w, r, q.err)
			return
		}
		ss, err := s.access.Sessions(r.Context(), c, f)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, ss)
	}
}

// handleSessionEnd ends an open session (admins: routes.go) with reason
// ended_by_admin, through access: the broker holding it, this one or
// another of the fleet, cuts its streams and records the real byte counts.
func (s *Server) handleSessionEnd() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		// An optional body gives the admin's reason, recorded with the end.
		var body httpapi.SessionEnd
		if r.ContentLength != 0 {
			if err := decodeJSON(w, r, maxGrantBody, &body); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		out, err := s.access.EndSession(r.Context(), c, chi.URLParam(r, "id"), body.Reason)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// handleAuditList lists audit events in seq order (auditors and admins:
// routes.go). Query: since (RFC 3339), actor, action, target, limit.
func (s *Server) handleAuditList() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		q := newQuery(r)
		f := fieldpass.AuditFilter{
			Since:  q.time("since"),
			Actor:  q.text("actor", maxParamLen),
			Action: q.text("action", maxParamLen),
			Target: q.text("target", maxParamLen),
			Limit:  q.limit(),
		}
		if q.err != nil {
			s.writeError(w, r, q.err)
			return
		}
		evs, err := s.access.AuditEvents(r.Context(), c, f)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, evs)
	}
}
