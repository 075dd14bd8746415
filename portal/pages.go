package portal

// The portal's pages: server-rendered HTML (html/template, which escapes
// every value by context), one small script of our own (static/portal.js)
// that only enhances, and a Content-Security-Policy that allows no inline
// script and no framing. Every page acts through package access, which
// enforces the rules; a page only reflects them (an action the caller may
// not take is not offered, and refused if asked for anyway).

import (
	"bytes"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/postgres"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pageCSP allows what the pages need and nothing else: our own scripts and
// styles, images inline (data:), fetches back to the broker, and forms that
// post here (and, opening a device web UI, are sent on to its origin:
// browsers apply form-action to the redirect too).
func (p *Portal) pageCSP() string {
	formAction := "'self'"
	if p.cfg.WebDomain != "" && p.login.origin != nil {
		src := p.login.origin.Scheme + "://*." + p.cfg.WebDomain
		if port := p.login.origin.Port(); port != "" {
			src += ":" + port
		}
		formAction += " " + src
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; form-action " + formAction + "; frame-ancestors 'none'; base-uri 'none'"
}

// flashCookie carries one message across a POST's redirect.
const flashCookie = "fieldpass_flash"

// navItem is one link of the page header, shown to the roles that can use
// it.
type navItem struct {
	Key, Title, Path string
	Roles            []fieldpass.Role // nil: everyone
}

var nav = []navItem{
	{Key: "devices", Title: "Devices", Path: "/devices"},
	{Key: "access", Title: "My access", Path: "/access"},
	{Key: "approvals", Title: "Approvals", Path: "/approvals", Roles: []fieldpass.Role{fieldpass.RoleApprover, fieldpass.RoleAdmin}},
	{Key: "grants", Title: "Grants", Path: "/grants", Roles: []fieldpass.Role{fieldpass.RoleAdmin}},
	{Key: "enrol", Title: "Enrol", Path: "/enrol", Roles: []fieldpass.Role{fieldpass.RoleAdmin}},
	{Key: "sessions", Title: "Sessions", Path: "/sessions"},
	{Key: "live", Title: "Live", Path: "/live", Roles: []fieldpass.Role{fieldpass.RoleAdmin, fieldpass.RoleAuditor}},
	{Key: "audit", Title: "Audit", Path: "/audit", Roles: []fieldpass.Role{fieldpass.RoleAdmin, fieldpass.RoleAuditor}},
}

// view is what every page template receives.
type view struct {
	Title   string
	Nav     []navItem
	Current string // the nav key of this page
	Caller  *fieldpass.Caller
	CSRF    string
	Flash   string
	Bad     bool // Flash reports a failure
	Now     time.Time
	Refresh int // seconds between live refreshes; 0: none
	Data    any
}

// pages holds one parsed template set per page: the layout plus the page.
type pages map[string]*template.Template

func parsePages() pages {
	funcs := template.FuncMap{
		"ago":       ago,
		"when":      when,
		"rfc3339":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"duration":  fieldpass.FormatDuration,
		"bytes":     humanBytes,
		"labels":    labelList,
		"join":      strings.Join,
		"hasRole":   func(c *fieldpass.Caller, r string) bool { return c.User.HasRole(fieldpass.Role(r)) },
		"query":     func(v url.Values) string { return v.Encode() },
		"deviceURL": func(name string) string { return "/devices/" + url.PathEscape(name) },
		"dict":      dict,
	}
	// The layout and the partials (_*.html) are in every page's set.
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/_*.html"))
	out := pages{}
	names, _ := fs.Glob(templateFS, "templates/*.html")
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" || strings.HasPrefix(base, "_") {
			continue
		}
		out[strings.TrimSuffix(base, ".html")] = template.Must(template.Must(layout.Clone()).ParseFS(templateFS, n))
	}
	return out
}

// render writes page name with v, status 200 unless status says otherwise.
// It renders into a buffer first so that a template error never sends half
// a page.
func (p *Portal) render(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	c := fieldpass.CallerFromContext(r.Context())
	v.Caller, v.Now = c, p.cfg.Now()
	if c != nil {
		v.CSRF = CSRFToken(r)
		for _, item := range nav {
			if item.Roles == nil || hasAny(c.User, item.Roles) {
				v.Nav = append(v.Nav, item)
			}
		}
	}
	if msg, bad, ok := p.takeFlash(w, r); ok {
		v.Flash, v.Bad = msg, bad
	}
	var buf bytes.Buffer
	t := p.pages[name]
	if t == nil {
		p.log.Error("no such page template", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, "layout.html", v); err != nil {
		p.log.Error("render page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fail shows err on an error page, with the status its code maps to; a
// form refused for what it said (invalid, conflict, ...) goes back where it
// came from with the message instead.
func (p *Portal) fail(w http.ResponseWriter, r *http.Request, err error) {
	err = postgres.Explain(err)
	code := fieldpass.ErrorCode(err)
	if code == fieldpass.EINTERNAL {
		p.log.Error("page failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	msg := sentence(fieldpass.ErrorMessage(err))
	if r.Method == http.MethodPost && code != fieldpass.EFORBIDDEN && code != fieldpass.ENOTFOUND && code != fieldpass.EINTERNAL {
		// A form that can be mended: back to it, saying what was wrong.
		p.redirectFlash(w, r, backTo(r), msg, true)
		return
	}
	p.render(w, r, httpapi.Status(code), "error", view{Title: "Cannot show this page", Data: msg})
}

// done sends the browser to target after a successful POST, with msg.
func (p *Portal) done(w http.ResponseWriter, r *http.Request, target, msg string) {
	p.redirectFlash(w, r, target, msg, false)
}

func (p *Portal) redirectFlash(w http.ResponseWriter, r *http.Request, target, msg string, bad bool) {
	kind := "ok:"
	if bad {
		kind = "bad:"
	}
	http.SetCookie(w, p.login.cookie(flashCookie, base64.RawURLEncoding.EncodeToString([]byte(kind+clip(msg, 600))), "/", time.Minute))
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// takeFlash reads and clears the flash message, if any.
func (p *Portal) takeFlash(w http.ResponseWriter, r *http.Request) (msg string, bad, ok bool) {
	ck, err := r.Cookie(flashCookie)
	if err != nil {
		return "", false, false
	}
	http.SetCookie(w, p.login.cookie(flashCookie, "", "/", -1))
	raw, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil {
		return "", false, false
	}
	s := string(raw)
	switch {
	case strings.HasPrefix(s, "ok:"):
		return s[3:], false, true
	case strings.HasPrefix(s, "bad:"):
		return s[4:], true, true
	}
	return "", false, false
}

// backTo is where a failed form goes back to: the page it was posted from
// when that is one of ours, else the form's own path.
func backTo(r *http.Request) string {
	if ref, err := url.Parse(r.Referer()); err == nil && ref.Host == r.Host && strings.HasPrefix(ref.Path, "/") && !strings.HasPrefix(ref.Path, "//") {
		return ref.RequestURI()
	}
	return r.URL.Path
}

// RequireLogin admits a browser carrying a live portal session: the caller
// goes into the request's context (with what the login asserted about MFA).
// Without one, a GET is sent to log in and come back; anything else is
// refused. A state-changing request must carry the session's CSRF token.
func (p *Portal) RequireLogin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := p.sessionFromCookie(r)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		if c != nil && c.User.RolesFresh(c.Token, p.cfg.RolesMaxAge, p.cfg.Now()) != nil {
			c = nil // log in again: the login reads the roles anew
		}
		if c == nil {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, "/auth/login?"+url.Values{"return": {r.URL.RequestURI()}}.Encode(), http.StatusSeeOther)
				return
			}
			writePage(w, http.StatusForbidden, page{Title: "Not logged in", Paras: []string{"Your portal session has ended. Log in again."}, Retry: "/auth/login"})
			return
		}
		if !safeMethod(r.Method) && !p.CSRFOK(r) {
			writePage(w, http.StatusForbidden, page{Title: "Form expired", Paras: []string{"This form does not carry this session's security token (it may come from another site, or from before you logged in again). Go back, reload the page and try again."}})
			return
		}
		c.MFA = p.MFAAsserted(r.Context(), c.Token)
		next.ServeHTTP(w, r.WithContext(fieldpass.NewContextWithCaller(r.Context(), c)))
	})
}

// Static serves the portal's own files and the vendored front-end packages
// under /static/. They change only with a release, so browsers may keep
// them for an hour.
func (p *Portal) Static() http.Handler {
	sub, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

// HandleHome sends a logged-in person to their devices, anyone else to log
// in first.
func (p *Portal) HandleHome() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			p.render(w, r, http.StatusNotFound, "error", view{Title: "Not found", Data: "There is no such page."})
			return
		}
		http.Redirect(w, r, "/devices", http.StatusSeeOther)
	}
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func hasAny(u *fieldpass.User, roles []fieldpass.Role) bool {
	for _, r := range roles {
		if u.HasRole(r) {
			return true
		}
	}
	return false
}

// sentence capitalises msg and ends it with a full stop.
func sentence(msg string) string {
	if msg == "" {
		return msg
	}
	msg = strings.ToUpper(msg[:1]) + msg[1:]
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}

// dict makes a map of key, value pairs, to hand a partial several values.
func dict(kv ...any) map[string]any {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		m[k] = kv[i+1]
	}
	return m
}

// ago says how long before now t was, as a person reads it.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// when is a time as people read it in a table, in UTC.
func when(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func labelList(labels map[string]string) []string {
	out := make([]string, 0, len(labels))
	for k, v := range labels {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}
