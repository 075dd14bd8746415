package apiserver

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
)

// handleDeviceHistory lists a device's connectivity history, newest first
// (admins and auditors: routes.go). Query: since (RFC 3339), limit.
func (s *Server) handleDeviceHistory() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		q := newQuery(r)
		since, limit := q.time("since"), q.limit()
		if q.err != nil {
			s.writeError(w, r, q.err)
			return
		}
		evs, err := s.access.DeviceHistory(r.Context(), c, chi.URLParam(r, "name"), since, limit)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, evs)
	}
}

// handleStaleReport reports forgotten devices, grants and vendor accounts
// (admins and auditors: routes.go). Query: not_seen, no_session, each a
// duration such as 720h or a number of days such as 30d.
func (s *Server) handleStaleReport() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		q := newQuery(r)
		opts := fieldpass.StaleOptions{NotSeen: q.days("not_seen"), NoSession: q.days("no_session")}
		if q.err != nil {
			s.writeError(w, r, q.err)
			return
		}
		rep, err := s.access.StaleReport(r.Context(), c, opts)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	}
}

// days returns a positive duration given as a Go duration (36h) or whole
// days (30d); absent is 0.
func (q *queryParams) days(name string) time.Duration {
	s := q.v.Get(name)
	if s == "" {
		return 0
	}
	d, err := fieldpass.ParseDuration(s)
	if err != nil || d <= 0 {
		q.fail(fieldpass.Errorf(fieldpass.EINVALID, "invalid %s %q: want a duration such as 36h or days such as 30d", name, truncate(s)))
		return 0
	}
	return d
}
