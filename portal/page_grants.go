package portal

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
)

// grantsData is the admins' grants page.
type grantsData struct {
	Grants []*fieldpass.Grant
	All    bool // ended and revoked grants too
}

// HandleGrants lists grants (in force, or all) and offers the form that
// creates one. Admins only.
func (p *Portal) HandleGrants() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		if err := p.cfg.Access.Allow(c, access.OpGrantsPage, "", fieldpass.RoleAdmin); err != nil {
			p.fail(w, r, err)
			return
		}
		d := grantsData{All: r.URL.Query().Get("all") == "1"}
		f := fieldpass.GrantFilter{Limit: 500}
		if !d.All {
			f.ActiveAt = p.cfg.Now()
		}
		var err error
		if d.Grants, err = p.cfg.Access.Grants(r.Context(), c, f); err != nil {
			p.fail(w, r, err)
			return
		}
		p.render(w, r, http.StatusOK, "grants", view{Title: "Grants", Current: "grants", Data: d})
	}
}

// HandleGrantCreate creates a grant from the form.
func (p *Portal) HandleGrantCreate() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		g, err := grantFromForm(r, p.cfg.Now())
		if err != nil {
			p.fail(w, r, err)
			return
		}
		out, err := p.cfg.Access.CreateGrant(r.Context(), c, g)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		what := strings.Join(out.Devices, ", ")
		if what == "" {
			what = "devices labelled " + strings.Join(labelList(out.Selector), ", ")
		}
		p.done(w, r, "/grants", fmt.Sprintf("%s may reach %s on %s until %s.", out.Subject, strings.Join(out.Services, ", "), what, when(out.End)))
	}
}

// HandleGrantRevoke revokes a grant and says how many live sessions it
// closed: the brokers carrying them end them within a second, and the page
// waits that long to tell.
func (p *Portal) HandleGrantRevoke() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		ctx := r.Context()
		id := chi.URLParam(r, "id")
		if err := p.cfg.Access.Allow(c, fieldpass.AuditGrantRevoke, "grant:"+id, fieldpass.RoleAdmin); err != nil {
			p.fail(w, r, err)
			return
		}
		open, err := p.cfg.Access.Sessions(ctx, c, fieldpass.SessionFilter{GrantID: id, Open: true})
		if err != nil {
			p.fail(w, r, err)
			return
		}
		g, err := p.cfg.Access.RevokeGrant(ctx, c, id, clip(strings.TrimSpace(r.PostFormValue("reason")), 1000))
		if err != nil {
			p.fail(w, r, err)
			return
		}
		msg := "Revoked the grant to " + g.Subject + "."
		if n := len(open); n > 0 {
			left := p.waitClosed(ctx, c, id, 3*time.Second)
			msg += fmt.Sprintf(" It covered %d live session%s: %d closed", n, plural(n), n-left)
			if left > 0 {
				msg += fmt.Sprintf(", %d still closing", left)
			}
			msg += "."
		}
		p.done(w, r, "/grants", msg)
	}
}

// waitClosed waits up to max for the open sessions of grant id to end and
// returns how many are still open.
func (p *Portal) waitClosed(ctx context.Context, c *fieldpass.Caller, id string, max time.Duration) int {
	deadline := time.Now().Add(max)
	for {
		open, err := p.cfg.Access.Sessions(ctx, c, fieldpass.SessionFilter{GrantID: id, Open: true})
		if err != nil || len(open) == 0 || time.Now().After(deadline) {
			return len(open)
		}
		select {
		case <-ctx.Done():
			return len(open)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// grantFromForm reads the grant form: devices or labels, services, and a
// duration from now or an end time.
func grantFromForm(r *http.Request, now time.Time) (fieldpass.Grant, error) {
	g := fieldpass.Grant{
		Subject:  strings.TrimSpace(r.PostFormValue("subject")),
		Devices:  fields(r.PostFormValue("devices")),
		Services: fields(r.PostFormValue("services")),
		Reason:   strings.TrimSpace(r.PostFormValue("reason")),
		Ticket:   strings.TrimSpace(r.PostFormValue("ticket")),
		Start:    now,
	}
	if sel := fields(r.PostFormValue("selector")); len(sel) > 0 {
		g.Selector = map[string]string{}
		for _, kv := range sel {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return g, fieldpass.Errorf(fieldpass.EINVALID, "label %q: want key=value", clip(kv, 100))
			}
			g.Selector[k] = v
		}
	}
	dur, until := strings.TrimSpace(r.PostFormValue("duration")), strings.TrimSpace(r.PostFormValue("until"))
	switch {
	case until != "":
		end, err := time.Parse(time.RFC3339, until)
		if err != nil {
			return g, fieldpass.Errorf(fieldpass.EINVALID, "end time %q: want e.g. 2026-12-31T18:00:00Z", clip(until, 60))
		}
		g.End = end
	case dur != "":
		d, err := fieldpass.ParsePositiveDuration("duration", dur)
		if err != nil {
			return g, err
		}
		g.End = now.Add(d)
	default:
		return g, fieldpass.Errorf(fieldpass.EINVALID, "a grant needs a duration or an end time: every grant ends")
	}
	return g, nil
}

// fields splits a form value on commas and white space.
func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
