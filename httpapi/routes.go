package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/fieldpass/fieldpass/tunnel"
)

// routes is the whole API surface in one place.
func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Get("/healthz", s.handleHealthz())
	r.Post(tunnel.EnrollPath, s.limit(s.handleEnroll()))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, tunnel.ErrorResponse{Code: "not_found", Message: "no such endpoint"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, tunnel.ErrorResponse{Code: "invalid", Message: "method not allowed"})
	})
	return r
}
