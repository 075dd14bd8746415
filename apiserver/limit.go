package apiserver

import (
	"net/http"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/ratelimit"
)

// limit answers 429 to a client over the enrolment and login limit.
func (s *Server) limit(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.limiter.Allow(ratelimit.ClientKey(ratelimit.ClientAddr(r))) {
			tooMany(w)
			return
		}
		next(w, r)
	}
}

// limitPages charges portal page requests to their client address, at the
// authenticated-call rate.
func (s *Server) limitPages(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.pageLimit.Allow(ratelimit.ClientKey(ratelimit.ClientAddr(r))) {
			w.Header().Set("Retry-After", "5")
			http.Error(w, "Too many requests: try again in a few seconds.", http.StatusTooManyRequests)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func tooMany(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "5")
	writeJSON(w, http.StatusTooManyRequests, errorBody(fieldpass.EUNAVAILABLE, "too many requests; try again shortly"))
}
