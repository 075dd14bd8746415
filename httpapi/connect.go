package httpapi

// PLACEHOLDER owned by the connect work in progress. Answers 501 until it
// lands.

import "net/http"

func (s *Server) handleConnect() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { notYet(w) }
}
