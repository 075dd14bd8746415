package apiserver

import (
	"context"
	"net/http"
	"time"
)

// readyTimeout bounds a readiness check: a store that takes longer than
// this to answer a ping is as good as down for the people waiting on it.
const readyTimeout = time.Second

// handleHealthz answers while the process can serve HTTP at all.
func handleHealthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
}

// handleReadyz answers 200 "ready" when ready (nil: always) reports nothing
// wrong within readyTimeout, else 503 with the reason.
func handleReadyz(ready func(context.Context) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			if err := ready(ctx); err != nil {
				writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
				return
			}
		}
		writeText(w, http.StatusOK, "ready")
	})
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}
