package httpapi

// PLACEHOLDER owned by the login work in progress: OIDC login, portal
// cookies with CSRF, and the device-style CLI login. Every handler answers
// 501 until it lands.

import (
	"net/http"

	"github.com/fieldpass/fieldpass"
)

// OIDCConfig configures login with the identity provider.
type OIDCConfig struct{}

type loginState struct{}

func newLoginState(Config) *loginState { return &loginState{} }

func notYet(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotImplemented, errorBody(fieldpass.EUNAVAILABLE, "not implemented yet"))
}

func (s *Server) csrfOK(*http.Request, *Caller) bool { return false }

func (s *Server) handleLogin() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleCallback() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleLogout() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleDeviceLoginStart() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleDeviceLoginToken() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleDeviceLoginPage() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleDeviceLoginApprove() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
