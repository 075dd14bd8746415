package apiserver

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/ratelimit"
)

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
		} else if t := s.portal.SessionToken(r); t != "" {
			tok, byCookie = t, true
		}
		if tok == "" {
			s.writeUnauthorized(w, r, fieldpass.Errorf(fieldpass.EINVALID, "not logged in: run fieldpass login, or log in to the portal"))
			return
		}
		// Limits are charged after the token check: failures to the
		// client address's own bucket, so a flood of made-up tokens
		// (from behind the same proxy, say) cannot starve valid ones;
		// success to the user's, wherever they call from.
		u, t, err := s.cfg.DB.Authenticate(r.Context(), tok)
		if err != nil {
			if code := fieldpass.ErrorCode(err); code != fieldpass.EINTERNAL && code != fieldpass.EUNAVAILABLE &&
				!s.authFail.Allow(ratelimit.ClientKey(ratelimit.ClientAddr(r))) {
				tooMany(w)
				return
			}
			s.writeUnauthorized(w, r, err)
			return
		}
		if err := s.rolesFresh(u, t); err != nil {
			s.writeUnauthorized(w, r, err)
			return
		}
		if !s.authLimit.Allow("user:" + u.ID) {
			tooMany(w)
			return
		}
		c := &fieldpass.Caller{User: u, Token: t, ByCookie: byCookie, Client: ratelimit.ClientAddr(r)}
		if byCookie && !safeMethod(r.Method) && !s.portal.CSRFOK(r) {
			s.writeError(w, r, fieldpass.Errorf(fieldpass.EFORBIDDEN, "missing or invalid CSRF token"))
			return
		}
		next.ServeHTTP(w, r.WithContext(fieldpass.NewContextWithCaller(r.Context(), c)))
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

// requireRole admits callers holding any of roles. A refusal is put on
// the record as the same refusal inside package access would be
// (access.Service.Allow): op is what was asked (an audit action such as
// grant.revoke, or a read such as audit.read), and the route's one URL
// parameter, if any, names its target as op's noun: grant.revoke on
// /grants/{id}/revoke is grant:ID.
func (s *Server) requireRole(op string, roles ...fieldpass.Role) func(http.Handler) http.Handler {
	noun, _, _ := strings.Cut(op, ".")
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			target := ""
			if rc := chi.RouteContext(r.Context()); rc != nil {
				for i, k := range rc.URLParams.Keys {
					if k != "*" && i < len(rc.URLParams.Values) {
						target = noun + ":" + rc.URLParams.Values[i]
					}
				}
			}
			if err := s.access.Allow(fieldpass.CallerFromContext(r.Context()), op, target, roles...); err != nil {
				s.writeError(w, r, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// rolesFresh refuses a login's token whose roles are older than
// RolesMaxAge (fieldpass.User.RolesFresh).
func (s *Server) rolesFresh(u *fieldpass.User, t *fieldpass.Token) error {
	return u.RolesFresh(t, s.cfg.RolesMaxAge, s.cfg.Now())
}
