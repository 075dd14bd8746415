package portal

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
)

// sessionsData is the sessions page: a filtered set of sessions and its
// totals. Exports carry exactly the same set.
type sessionsData struct {
	Filter   sessionForm
	Sessions []*fieldpass.Session
	Reasons  []fieldpass.EndReason
	Query    url.Values // the filter, for the export links
	Totals   sessionTotals
	SeesAll  bool
}

type sessionForm struct {
	Person, Device, Service, From, To, Reason string
	Open                                      bool
}

type sessionTotals struct {
	Count, Open, People, Devices int
	BytesIn, BytesOut            int64
	Time                         time.Duration
}

// sessionFilter reads the filter form from the query. From and To are
// dates (2026-12-01) or RFC 3339 times, in UTC; To is exclusive, and a date
// means the whole day.
func sessionFilter(q url.Values) (sessionForm, fieldpass.SessionFilter, error) {
	form := sessionForm{
		Person: clip(strings.TrimSpace(q.Get("person")), 320), Device: clip(strings.TrimSpace(q.Get("device")), 63),
		Service: clip(strings.TrimSpace(q.Get("service")), 63), From: clip(strings.TrimSpace(q.Get("from")), 40),
		To: clip(strings.TrimSpace(q.Get("to")), 40), Reason: clip(q.Get("reason"), 40), Open: q.Get("open") == "1",
	}
	f := fieldpass.SessionFilter{User: form.Person, Device: form.Device, Service: form.Service, Open: form.Open, Limit: 1000}
	if form.Reason != "" {
		f.EndReason = fieldpass.EndReason(form.Reason)
	}
	var err error
	if f.Since, err = formTime(form.From, false); err != nil {
		return form, f, err
	}
	if f.Until, err = formTime(form.To, true); err != nil {
		return form, f, err
	}
	return form, f, nil
}

// formTime reads a date or an RFC 3339 time; a date as the end of a range
// means the end of that day.
func formTime(s string, end bool) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return time.Time{}, fieldpass.Errorf(fieldpass.EINVALID, "time %q: want a date (2026-12-01) or a time (2026-12-01T08:00:00Z)", s)
	}
	if end {
		t = t.Add(24 * time.Hour)
	}
	return t, nil
}

func (p *Portal) filteredSessions(r *http.Request) (sessionsData, error) {
	c := fieldpass.CallerFromContext(r.Context())
	form, f, err := sessionFilter(r.URL.Query())
	d := sessionsData{Filter: form, Reasons: fieldpass.EndReasons, SeesAll: access.SeesAll(c)}
	if err != nil {
		return d, err
	}
	if d.Sessions, err = p.cfg.Access.Sessions(r.Context(), c, f); err != nil {
		return d, err
	}
	q := url.Values{}
	for k, v := range map[string]string{"person": form.Person, "device": form.Device, "service": form.Service, "from": form.From, "to": form.To, "reason": form.Reason} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if form.Open {
		q.Set("open", "1")
	}
	d.Query = q
	people, devices := map[string]bool{}, map[string]bool{}
	now := p.cfg.Now()
	for _, s := range d.Sessions {
		d.Totals.Count++
		d.Totals.BytesIn += s.BytesIn
		d.Totals.BytesOut += s.BytesOut
		people[s.User], devices[s.Device] = true, true
		end := s.End
		if s.Open() {
			d.Totals.Open++
			end = now
		}
		d.Totals.Time += end.Sub(s.Start)
	}
	d.Totals.People, d.Totals.Devices = len(people), len(devices)
	return d, nil
}

// HandleSessions lists sessions (everyone's for auditors and admins, one's
// own otherwise) by person, device, service, time range and end reason,
// with totals and links to export exactly that set.
func (p *Portal) HandleSessions() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d, err := p.filteredSessions(r)
		if err != nil && fieldpass.ErrorCode(err) != fieldpass.EINVALID {
			p.fail(w, r, err)
			return
		}
		v := view{Title: "Sessions", Current: "sessions", Data: d}
		if err != nil {
			v.Flash, v.Bad = sentence(fieldpass.ErrorMessage(err)), true
		}
		p.render(w, r, http.StatusOK, "sessions", v)
	}
}

// HandleSessionsExport answers the filtered set as CSV or JSON
// ({format}: csv or json), as a download.
func (p *Portal) HandleSessionsExport() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		format := chi.URLParam(r, "format")
		if format != "csv" && format != "json" {
			p.fail(w, r, fieldpass.Errorf(fieldpass.ENOTFOUND, "no export format %q: want csv or json", clip(format, 20)))
			return
		}
		d, err := p.filteredSessions(r)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		name := "fieldpass-sessions-" + p.cfg.Now().UTC().Format("20060102T150405Z") + "." + format
		h := w.Header()
		h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		if format == "json" {
			h.Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(d.Sessions)
			return
		}
		h.Set("Content-Type", "text/csv; charset=utf-8")
		fieldpass.WriteSessionsCSV(w, d.Sessions)
	}
}

// liveData is the live sessions page.
type liveData struct {
	Sessions []*fieldpass.Session
	GrantEnd map[string]time.Time // session id -> when its grant ends
	CanEnd   bool
}

// HandleLive shows who is connected to what right now, with bytes and the
// time left on each grant; admins may end a session with a reason. With
// several brokers it lists the whole fleet's open sessions (the rows are
// shared), each with the broker the person's connect reached and the one
// holding the device; their byte counts are those the holder last wrote
// (every few seconds). An end asked here reaches the holder
// (access.Service.EndSession).
func (p *Portal) HandleLive() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		ctx := r.Context()
		if err := p.cfg.Access.Allow(c, access.OpLiveSessions, "", fieldpass.RoleAdmin, fieldpass.RoleAuditor); err != nil {
			p.fail(w, r, err)
			return
		}
		d := liveData{GrantEnd: map[string]time.Time{}, CanEnd: c.User.HasRole(fieldpass.RoleAdmin)}
		var err error
		if d.Sessions, err = p.cfg.Access.Sessions(ctx, c, fieldpass.SessionFilter{Open: true, Limit: 1000}); err != nil {
			p.fail(w, r, err)
			return
		}
		grants, err := p.cfg.Access.Grants(ctx, c, fieldpass.GrantFilter{ActiveAt: p.cfg.Now(), Limit: 1000})
		if err != nil {
			p.fail(w, r, err)
			return
		}
		ends := map[string]time.Time{}
		for _, g := range grants {
			ends[g.ID] = g.End
		}
		for _, s := range d.Sessions {
			if e, ok := ends[s.GrantID]; ok {
				d.GrantEnd[s.ID] = e
			}
		}
		p.render(w, r, http.StatusOK, "live", view{Title: "Live sessions", Current: "live", Data: d, Refresh: 5})
	}
}

// HandleSessionEnd ends a live session (admins), recording the reason the
// admin gave in the audit log; the person's terminal or page is told it was
// ended by an admin.
func (p *Portal) HandleSessionEnd() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		why := strings.TrimSpace(r.PostFormValue("why"))
		if why == "" {
			p.fail(w, r, fieldpass.Errorf(fieldpass.EINVALID, "say why you end this session: it is recorded"))
			return
		}
		s, err := p.cfg.Access.EndSession(r.Context(), c, chi.URLParam(r, "id"), clip(why, 1000))
		if err != nil {
			p.fail(w, r, err)
			return
		}
		p.done(w, r, "/live", "Ended "+s.User+"'s "+s.Service+" session on "+s.Device+".")
	}
}

// sessionData is one session's page.
type sessionData struct {
	Session   *fieldpass.Session
	Requests  []fieldpass.WebRequest
	Recording bool // a terminal recording to replay
	Watchable bool // a live terminal on this broker the caller may watch
}

// HandleSession shows one session and, for a device web UI, every HTTP
// request it carried: to its person, and to admins and auditors.
func (p *Portal) HandleSession() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := fieldpass.CallerFromContext(r.Context())
		id := chi.URLParam(r, "id")
		s, err := p.cfg.Access.Session(r.Context(), c, id)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		d := sessionData{Session: s}
		if d.Requests, err = p.cfg.Access.WebRequests(r.Context(), c, id); err != nil {
			p.fail(w, r, err)
			return
		}
		if d.Recording, err = p.cfg.DB.HasRecording(r.Context(), id); err != nil {
			p.fail(w, r, err)
			return
		}
		d.Watchable = s.Open() && access.SeesAll(c) && p.watches.get(id) != nil
		p.render(w, r, http.StatusOK, "session", view{Title: "Session", Current: "sessions", Data: d})
	}
}
