// Package httpapi is the contract of the broker's JSON API over HTTP and its
// Go client: the request and response bodies, the paths, the error body and
// the one table from error codes to HTTP statuses, the Client the CLI and
// tests use, and the connect client (a WebSocket carrying yamux). The server
// side is package apiserver; the browser side, package portal.
//
// It links nothing a server needs (no Postgres, router or OIDC library), so
// the fieldpass CLI stays small: see deps_test.go in cmd/fieldpass.
package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/coder/websocket"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
)

// The connect endpoint (ConnectPath) carries one recorded session over a
// WebSocket:
//
//  1. GET ConnectPath?device=D&service=S with the token in the Authorization
//     header and the subprotocol ConnectSubprotocol. The broker checks the
//     caller, a live grant and the device, and commits the session row
//     before it upgrades: a refusal is an ordinary JSON error (403 no grant
//     or disabled, 410 grant expired, 404 no such device, 503 device offline
//     or audit store down) and opens nothing.
//  2. The WebSocket's binary messages carry a yamux session
//     (tunnel.YamuxConfig); the client opens one stream per connection to
//     the service. The broker answers each with a tunnel.StreamStatus (ok,
//     or why it could not reach the service) before any other byte, as the
//     connector does to the broker.
//  3. When the broker ends the session (grant expired or revoked, user or
//     device disabled, an admin, idle), it closes the WebSocket with
//     ConnectCloseCode and the end reason ("grant_expired") as the close
//     text. A client that closes the WebSocket ends it as client_closed.
//
// The Go client asks first for the raw transport, yamux without WebSocket
// frames after an HTTP upgrade (ConnectUpgrade, in connect_client.go).
const (
	// ConnectPath is the WebSocket endpoint; query: device, service. The
	// token travels in the Authorization header, never in the URL.
	ConnectPath = "/api/v1/connect"
	// ConnectSubprotocol is negotiated on the WebSocket; the bytes inside
	// are a yamux session (tunnel.YamuxConfig) whose streams the client
	// opens.
	ConnectSubprotocol = "fieldpass.connect.v1"
	// ConnectCloseCode is the WebSocket close code of a session the broker
	// ended; the close reason is the fieldpass.EndReason.
	ConnectCloseCode = websocket.StatusCode(4000)
	// ConnectReadLimit bounds one WebSocket message, on both ends. yamux
	// sends a frame header and its body as two writes, and a body never
	// exceeds the receiver's window (tunnel.DefaultWindow, the same on both
	// ends).
	ConnectReadLimit = tunnel.DefaultWindow + 64<<10
)

// ErrorResponse is the body of every error answer: a code from the
// fieldpass error vocabulary and a message a person can act on.
type ErrorResponse = tunnel.ErrorResponse

// statusOf is the one table from error codes to HTTP statuses.
var statusOf = map[string]int{
	fieldpass.ECONFLICT:    http.StatusConflict,
	fieldpass.EFORBIDDEN:   http.StatusForbidden,
	fieldpass.EINTERNAL:    http.StatusInternalServerError,
	fieldpass.EINVALID:     http.StatusBadRequest,
	fieldpass.ENOTFOUND:    http.StatusNotFound,
	fieldpass.EUNAVAILABLE: http.StatusServiceUnavailable,
	fieldpass.EEXPIRED:     http.StatusGone,
}

// Status is the HTTP status that answers an error with code (500 for a code
// outside the vocabulary).
func Status(code string) int {
	if s, ok := statusOf[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// codeOf maps HTTP statuses to error codes for answers that carry no error
// body of ours (a proxy's error page, say): the inverse of Status, widened.
func codeOf(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusUnauthorized:
		return fieldpass.EINVALID
	case http.StatusForbidden:
		return fieldpass.EFORBIDDEN
	case http.StatusNotFound:
		return fieldpass.ENOTFOUND
	case http.StatusConflict:
		return fieldpass.ECONFLICT
	case http.StatusGone:
		return fieldpass.EEXPIRED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable,
		http.StatusGatewayTimeout, http.StatusNotImplemented:
		return fieldpass.EUNAVAILABLE
	}
	return fieldpass.EINTERNAL
}

// WriteJSON answers v as JSON with status; answers are never cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// WriteError answers err as an ErrorResponse with its code's status. Errors
// outside the vocabulary read "internal error": the caller logs them.
func WriteError(w http.ResponseWriter, err error) {
	code := fieldpass.ErrorCode(err)
	WriteJSON(w, Status(code), ErrorResponse{Code: code, Message: fieldpass.ErrorMessage(err)})
}

// DecodeJSON reads one JSON object of at most max bytes into v, refusing
// another content type, unknown fields and trailing data.
func DecodeJSON(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return fieldpass.Errorf(fieldpass.EINVALID, "want Content-Type application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fieldpass.Errorf(fieldpass.EINVALID, "request body larger than %d bytes", max)
		}
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid JSON body: %v", err)
	}
	if dec.More() {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid JSON body: trailing data")
	}
	return nil
}
