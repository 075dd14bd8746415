package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/fieldpass/fieldpass"
)

// SessionCookie carries a portal login: Secure, HttpOnly, SameSite=Lax.
const SessionCookie = "fieldpass_session"

// Caller is the authenticated person behind a request.
type Caller struct {
	User  *fieldpass.User
	Token *fieldpass.Token
	// ByCookie is true when the token came from the portal cookie: then
	// state-changing requests must also carry a valid CSRF token.
	ByCookie bool
}

type callerKey struct{}

// CallerFrom returns the caller authenticate put in ctx, or nil.
func CallerFrom(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	return c
}

// authenticate admits requests with a valid broker token, from the
// Authorization header ("Bearer fpt_...") or the portal cookie. Tokens never
// travel in URLs. Failures are 401 with a reason; nothing else is done.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, byCookie := "", false
		if h := r.Header.Get("Authorization"); h != "" {
			scheme, rest, ok := strings.Cut(h, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				s.writeUnauthorized(w, r, fieldpass.Errorf(fieldpass.EINVALID, "want Authorization: Bearer TOKEN"))
				return
			}
			tok = strings.TrimSpace(rest)
		} else if c, err := r.Cookie(SessionCookie); err == nil {
			tok, byCookie = c.Value, true
		}
		if tok == "" {
			s.writeUnauthorized(w, r, fieldpass.Errorf(fieldpass.EINVALID, "not logged in: run fieldpass login, or log in to the portal"))
			return
		}
		if !s.authLimit.allow(clientAddr(r)) {
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusTooManyRequests, errorBody(fieldpass.EUNAVAILABLE, "too many requests; try again shortly"))
			return
		}
		u, t, err := s.cfg.DB.Authenticate(r.Context(), tok)
		if err != nil {
			s.writeUnauthorized(w, r, err)
			return
		}
		c := &Caller{User: u, Token: t, ByCookie: byCookie}
		if byCookie && !safeMethod(r.Method) && !s.csrfOK(r, c) {
			s.writeError(w, r, fieldpass.Errorf(fieldpass.EFORBIDDEN, "missing or invalid CSRF token"))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// writeUnauthorized answers 401 (403 for a disabled user or revoked token,
// which logging in again would not fix).
func (s *Server) writeUnauthorized(w http.ResponseWriter, r *http.Request, err error) {
	code := fieldpass.ErrorCode(err)
	if code == fieldpass.EINTERNAL || code == fieldpass.EUNAVAILABLE {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusUnauthorized
	if code == fieldpass.EFORBIDDEN {
		status = http.StatusForbidden
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="fieldpass"`)
	writeJSON(w, status, errorBody(code, fieldpass.ErrorMessage(err)))
}

// requireRole admits callers holding any of roles.
func (s *Server) requireRole(roles ...fieldpass.Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := CallerFrom(r.Context())
			for _, role := range roles {
				if c != nil && c.User.HasRole(role) {
					next.ServeHTTP(w, r)
					return
				}
			}
			names := make([]string, len(roles))
			for i, role := range roles {
				names[i] = string(role)
			}
			s.writeError(w, r, fieldpass.Errorf(fieldpass.EFORBIDDEN, "this needs the %s role", strings.Join(names, " or ")))
		})
	}
}
