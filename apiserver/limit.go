package apiserver

import (
	"net/http"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/ratelimit"
)

// limit answers 429 to a client over the enrolment and login limit.
func (s *Server) limit(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.limiter.Allow(ratelimit.ClientAddr(r)) {
			tooMany(w)
			return
		}
		next(w, r)
	}
}

func tooMany(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "5")
	writeJSON(w, http.StatusTooManyRequests, errorBody(fieldpass.EUNAVAILABLE, "too many requests; try again shortly"))
}
