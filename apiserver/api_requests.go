package apiserver

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
)

// seesAllRequests reports whether c reads every access request: those who
// decide them, and auditors.
func seesAllRequests(c *fieldpass.Caller) bool {
	return c.User.HasRole(fieldpass.RoleApprover) || c.User.HasRole(fieldpass.RoleAdmin) ||
		c.User.HasRole(fieldpass.RoleAuditor)
}

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
		d, err := parseDuration("duration", body.Duration)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if max := s.cfg.GrantLimits.Max(c.User.Roles); d > max {
			s.writeError(w, r, fieldpass.Errorf(fieldpass.EINVALID, "requested duration %s is longer than the %s a grant to you may last", d, max))
			return
		}
		req, err := s.cfg.DB.CreateRequest(r.Context(), fieldpass.AccessRequest{
			Requester: c.User.Email,
			Device:    body.Device,
			Service:   body.Service,
			Duration:  d,
			Reason:    body.Reason,
			Ticket:    body.Ticket,
		})
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		s.log.Info("access request filed", "request", req.ID, "requester", req.Requester, "device", req.Device, "service", req.Service)
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
		if mine || !seesAllRequests(c) {
			f.Requester = c.User.Email
		}
		rs, err := s.cfg.DB.Requests(r.Context(), f)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if rs == nil {
			rs = []*fieldpass.AccessRequest{}
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
		id := chi.URLParam(r, "id")
		req, err := s.cfg.DB.Request(r.Context(), id)
		if err == nil && req.Requester != c.User.Email && !seesAllRequests(c) {
			err = fieldpass.Errorf(fieldpass.ENOTFOUND, "request %s not found", id)
		}
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
		ctx := r.Context()
		cur, err := s.cfg.DB.Request(ctx, chi.URLParam(r, "id"))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		max, err := s.maxGrantFor(ctx, cur.Requester)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		req, g, err := s.cfg.DB.DecideRequest(ctx, c.User.Email, cur.ID, approve, max)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if g != nil {
			s.log.Info("access request approved", "request", req.ID, "grant", g.ID, "requester", req.Requester, "by", c.User.Email)
		} else {
			s.log.Info("access request denied", "request", req.ID, "requester", req.Requester, "by", c.User.Email)
		}
		writeJSON(w, http.StatusOK, req)
	}
}
