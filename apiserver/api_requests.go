package apiserver

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
)

// handleRequestCreate files an access request by the caller, for
// themselves. It is refused up front if it asks for longer than a grant to
// the caller may last, so that no approver is asked to approve what cannot
// be granted.
func (s *Server) handleRequestCreate() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		var body httpapi.RequestCreate
		if err := decodeJSON(w, r, maxRequestBody, &body); err != nil {
			s.writeError(w, r, err)
			return
		}
		d, err := fieldpass.ParsePositiveDuration("duration", body.Duration)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		req, err := s.access.CreateRequest(r.Context(), c, fieldpass.AccessRequest{
			Device:   body.Device,
			Service:  body.Service,
			Duration: d,
			Reason:   body.Reason,
			Ticket:   body.Ticket,
		})
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusCreated, req)
	}
}

// handleRequestList lists access requests, newest first: every request for
// approvers, admins and auditors (or only their own with mine=true), the
// caller's own for everyone else. Query: status, mine, limit.
func (s *Server) handleRequestList() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		q := newQuery(r)
		f := fieldpass.RequestFilter{
			Status: fieldpass.RequestStatus(q.text("status", 16)),
			Limit:  q.limit(),
		}
		mine := q.boolean("mine")
		if q.err != nil {
			s.writeError(w, r, q.err)
			return
		}
		rs, err := s.access.Requests(r.Context(), c, f, mine)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, rs)
	}
}

// handleRequestGet returns one access request to its requester, or to an
// approver, admin or auditor. To anyone else it does not exist.
func (s *Server) handleRequestGet() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		req, err := s.access.Request(r.Context(), c, chi.URLParam(r, "id"))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, req)
	}
}

// handleRequestDecide approves or denies a pending request (approvers and
// admins: routes.go). Approval creates the grant, no longer than the limit
// for the requester's roles. The store refuses a decision on one's own
// request (forbidden) and a second decision (conflict).
func (s *Server) handleRequestDecide(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		var body httpapi.RequestDecision
		if r.ContentLength != 0 {
			if err := decodeJSON(w, r, maxRequestBody, &body); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		req, _, err := s.access.DecideRequest(r.Context(), c, chi.URLParam(r, "id"), approve, body.Comment)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, req)
	}
}
