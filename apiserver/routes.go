package apiserver

import (
	"context"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/tunnel"
)

// routes is the whole API surface in one place. Every /api/v1 route but
// enrolment and the device-login endpoints needs a caller (authenticate);
// role checks sit here too, so the matrix of who may do what is readable in
// one screen. Handlers narrow further (a vendor sees only their own grants).
func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	// The client address is decided once, before any handler records or
	// limits by it (ratelimit.ClientAddr).
	r.Use(s.proxies.Handler)
	// Device web UIs, each on an origin of its own, before any route.
	r.Use(s.portal.WebHosts)
	r.Method(http.MethodGet, "/healthz", handleHealthz())
	r.Method(http.MethodGet, "/readyz", handleReadyz(s.cfg.Ready))

	p := s.portal
	// People log in through the IdP (portal) or the device flow (CLI).
	r.Get("/auth/login", s.limit(p.HandleLogin()))
	r.Get("/auth/callback", s.limit(p.HandleCallback()))
	r.With(s.authenticate).Post("/auth/logout", p.HandleLogout())
	r.Get("/login/device", p.HandleDeviceLoginPage())
	r.With(s.authenticate).Post("/login/device", p.HandleDeviceLoginApprove())

	// The portal's pages, for a browser with the portal cookie; they act
	// through package access, as the API does.
	r.Method(http.MethodGet, "/static/*", p.Static())
	r.Group(func(r chi.Router) {
		r.Use(s.limitPages, p.RequireLogin)
		r.Get("/", p.HandleHome())
		r.Get("/devices", p.HandleDevices())
		r.Get("/devices/{name}", p.HandleDevice())
		r.Post("/web/{device}/{service}", p.HandleWebOpen())
		r.Get("/terminal/{device}/{service}", p.HandleTerminal())
		r.Get("/terminal/socket", p.HandleTerminalSocket())
		r.Post("/devices/{name}/hostkeys/{service}/accept", p.HandleHostKeyAccept())
		r.Post("/devices/{name}/state", p.HandleDeviceState())
		r.Post("/devices/{name}/keepalive", p.HandleDeviceKeepalive())
		r.Get("/enrol", p.HandleEnrol())
		r.Post("/enrol", p.HandleEnrolCreate())
		r.Get("/access", p.HandleAccess())
		r.Post("/access/requests", p.HandleRequestCreate())
		r.Get("/approvals", p.HandleApprovals())
		r.Post("/approvals/{id}", p.HandleDecide())
		r.Get("/grants", p.HandleGrants())
		r.Post("/grants", p.HandleGrantCreate())
		r.Post("/grants/{id}/revoke", p.HandleGrantRevoke())
		r.Get("/sessions", p.HandleSessions())
		r.Get("/sessions/export/{format}", p.HandleSessionsExport())
		r.Get("/sessions/{id}", p.HandleSession())
		r.Get("/sessions/{id}/recording.cast", p.HandleRecording())
		r.Get("/sessions/{id}/watch", p.HandleWatch())
		r.Get("/sessions/{id}/watch/socket", p.HandleWatchSocket())
		r.Get("/live", p.HandleLive())
		r.Post("/live/{id}/end", p.HandleSessionEnd())
		r.Get("/audit", p.HandleAudit())
	})

	r.Route("/api/v1", func(r chi.Router) {
		// Devices enrol with a single-use token; no person is involved.
		r.Post(strings.TrimPrefix(tunnel.EnrollPath, "/api/v1"), s.limit(s.handleEnroll()))
		r.Post("/login/device", s.limit(p.HandleDeviceLoginStart()))
		r.Post("/login/device/token", s.limit(p.HandleDeviceLoginToken()))
		r.Get("/openapi.json", handleOpenAPI())
		r.Group(func(r chi.Router) { s.personRoutes(r) })
	})

	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, tunnel.ErrorResponse{Code: "not_found", Message: "no such endpoint"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, tunnel.ErrorResponse{Code: "invalid", Message: "method not allowed"})
	})
	return r
}

// personRoutes are the /api/v1 routes for logged-in people.
func (s *Server) personRoutes(r chi.Router) {
	const (
		admin    = fieldpass.RoleAdmin
		approver = fieldpass.RoleApprover
		auditor  = fieldpass.RoleAuditor
	)
	{
		r.Use(s.authenticate)
		r.Get("/me", s.handleMe())
		r.Get("/devices", s.handleDevices())

		r.With(s.requireRole(fieldpass.AuditGrantCreate, admin)).Post("/grants", s.handleGrantCreate())
		r.Get("/grants", s.handleGrantList())
		r.With(s.requireRole(fieldpass.AuditGrantRevoke, admin)).Post("/grants/{id}/revoke", s.handleGrantRevoke())

		r.Post("/requests", s.handleRequestCreate())
		r.Get("/requests", s.handleRequestList())
		r.Get("/requests/{id}", s.handleRequestGet())
		r.With(s.requireRole(fieldpass.AuditRequestApprove, approver, admin)).Post("/requests/{id}/approve", s.handleRequestDecide(true))
		r.With(s.requireRole(fieldpass.AuditRequestDeny, approver, admin)).Post("/requests/{id}/deny", s.handleRequestDecide(false))

		r.Get("/sessions", s.handleSessionList())
		r.With(s.requireRole(fieldpass.AuditSessionEndAsked, admin)).Post("/sessions/{id}/end", s.handleSessionEnd())
		r.With(s.requireRole(access.OpAuditRead, auditor, admin)).Get("/audit", s.handleAuditList())
		r.With(s.requireRole(access.OpDeviceHistory, auditor, admin)).Get("/devices/{name}/history", s.handleDeviceHistory())
		r.With(s.requireRole(access.OpStaleReport, auditor, admin)).Get("/reports/stale", s.handleStaleReport())

		// A WebSocket carrying a yamux session: each stream the client
		// opens is one connection to the device's service.
		r.Get("/connect", s.handleConnect())
	}
}

// OpsRoutes is the operations listener, apart from the API so that it can
// stay on a private address: the Prometheus scrape endpoint and the same
// health and readiness probes as the API's.
func OpsRoutes(metrics http.Handler, ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.Handle("GET /healthz", handleHealthz())
	mux.Handle("GET /readyz", handleReadyz(ready))
	return mux
}
