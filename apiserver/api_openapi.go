package apiserver

import (
	_ "embed"
	"net/http"
)

// openAPI describes every /api/v1 route (TestOpenAPICoversRoutes holds it
// to the router), for people and tools writing their own clients.
//
//go:embed openapi.json
var openAPI []byte

// handleOpenAPI serves the API's OpenAPI description; it needs no login,
// as it says nothing the source does not.
func handleOpenAPI() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	}
}
