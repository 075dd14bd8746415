package portal

import (
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
)

// accessData is the "My access" page.
type accessData struct {
	Grants   []*fieldpass.Grant
	Requests []*fieldpass.AccessRequest
	MaxGrant time.Duration
	// Form is the request form, prefilled from the query (a device page's
	// "request access" link) or from a refused attempt.
	Form requestForm
}

type requestForm struct {
	Device, Service, Duration, Reason, Ticket string
}

// HandleAccess shows the caller's grants in force (with their countdowns)
// and their access requests, with a form to ask for more.
func (p *Portal) HandleAccess() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		ctx := r.Context()
		d := accessData{MaxGrant: p.cfg.Access.MaxGrant(c)}
		var err error
		if d.Grants, err = p.cfg.Access.Grants(ctx, c, fieldpass.GrantFilter{Subject: c.User.Email, ActiveAt: p.cfg.Now(), Limit: 200}); err != nil {
			p.fail(w, r, err)
			return
		}
		if d.Requests, err = p.cfg.Access.Requests(ctx, c, fieldpass.RequestFilter{Limit: 50}, true); err != nil {
			p.fail(w, r, err)
			return
		}
		q := r.URL.Query()
		d.Form = requestForm{Device: clip(q.Get("device"), 63), Service: clip(q.Get("service"), 63), Duration: "4h"}
		p.render(w, r, http.StatusOK, "access", view{Title: "My access", Current: "access", Data: d})
	}
}

// HandleRequestCreate files an access request from the form.
func (p *Portal) HandleRequestCreate() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		d, err := fieldpass.ParsePositiveDuration("duration", r.PostFormValue("duration"))
		if err != nil {
			p.fail(w, r, err)
			return
		}
		req, err := p.cfg.Access.CreateRequest(r.Context(), c, fieldpass.AccessRequest{
			Device:   strings.TrimSpace(r.PostFormValue("device")),
			Service:  strings.TrimSpace(r.PostFormValue("service")),
			Duration: d,
			Reason:   strings.TrimSpace(r.PostFormValue("reason")),
			Ticket:   strings.TrimSpace(r.PostFormValue("ticket")),
		})
		if err != nil {
			p.fail(w, r, err)
			return
		}
		p.done(w, r, "/access", "Access to "+req.Service+" on "+req.Device+" for "+fieldpass.FormatDuration(req.Duration)+" requested: an approver will decide.")
	}
}

// approvalsData is the approvals page.
type approvalsData struct {
	Pending []*fieldpass.AccessRequest
	Decided []*fieldpass.AccessRequest
}

// HandleApprovals lists pending requests for approvers to decide, and the
// latest decisions.
func (p *Portal) HandleApprovals() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		if err := p.cfg.Access.Allow(c, access.OpApprovals, "", fieldpass.RoleApprover, fieldpass.RoleAdmin); err != nil {
			p.fail(w, r, err)
			return
		}
		var d approvalsData
		var err error
		if d.Pending, err = p.cfg.Access.Requests(r.Context(), c, fieldpass.RequestFilter{Status: fieldpass.RequestPending, Limit: 200}, false); err != nil {
			p.fail(w, r, err)
			return
		}
		all, err := p.cfg.Access.Requests(r.Context(), c, fieldpass.RequestFilter{Limit: 50}, false)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		for _, req := range all {
			if req.Status != fieldpass.RequestPending {
				d.Decided = append(d.Decided, req)
			}
		}
		p.render(w, r, http.StatusOK, "approvals", view{Title: "Approvals", Current: "approvals", Data: d, Refresh: 20})
	}
}

// HandleDecide approves or denies a request ("decision" approve or deny).
// The rules refuse one's own request and a second decision.
func (p *Portal) HandleDecide() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		var approve bool
		switch r.PostFormValue("decision") {
		case "approve":
			approve = true
		case "deny":
		default:
			p.fail(w, r, fieldpass.Errorf(fieldpass.EINVALID, "want the decision approve or deny"))
			return
		}
		req, g, err := p.cfg.Access.DecideRequest(r.Context(), c, chi.URLParam(r, "id"), approve, clip(strings.TrimSpace(r.PostFormValue("comment")), 1000))
		if err != nil {
			p.fail(w, r, err)
			return
		}
		msg := "Denied " + req.Requester + "'s request for " + req.Service + " on " + req.Device + "."
		if g != nil {
			msg = "Approved: " + req.Requester + " may reach " + req.Service + " on " + req.Device + " until " + when(g.End) + "."
		}
		p.done(w, r, "/approvals", msg)
	}
}
