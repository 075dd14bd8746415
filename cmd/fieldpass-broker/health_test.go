package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestHealth: health exits 0 on the broker's 200 and fails, saying why, on
// anything else or on no answer.
func TestHealth(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !ready.Load() {
			http.Error(w, "postgres: connection refused", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	check := func(url string) (string, error) {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), []string{"health", "--url", url}, func(string) string { return "" }, &stdout, &stderr)
		return stdout.String(), err
	}
	if out, err := check(srv.URL + "/readyz"); err != nil || out != "ready\n" {
		t.Errorf("ready broker: %q, %v", out, err)
	}
	ready.Store(false)
	if _, err := check(srv.URL + "/readyz"); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "postgres: connection refused") {
		t.Errorf("unready broker: %v, want the status and the broker's reason", err)
	}
	srv.Close()
	if _, err := check(srv.URL + "/readyz"); err == nil || !strings.Contains(err.Error(), "not reachable") {
		t.Errorf("no broker: %v", err)
	}
}
