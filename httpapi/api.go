package httpapi

// PLACEHOLDER owned by the API work in progress. Every handler answers 501
// until it lands.

import "net/http"

func (s *Server) handleMe() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleDevices() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleGrantCreate() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleGrantList() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleGrantRevoke() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleRequestCreate() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleRequestList() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleRequestGet() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleRequestDecide(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleSessionList() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleSessionEnd() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
func (s *Server) handleAuditList() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
