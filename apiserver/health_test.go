package apiserver_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/fieldpass/fieldpass/apiserver"
)

func TestReadyzOnAPI(t *testing.T) {
	var notReady error
	api := apiserver.New(apiserver.Config{Ready: func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("readiness check has no deadline")
		}
		return notReady
	}})
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		name     string
		err      error
		path     string
		wantCode int
		wantBody string
	}{
		{"ready", nil, "/readyz", http.StatusOK, "ready\n"},
		{"store down", errors.New("postgres unreachable"), "/readyz", http.StatusServiceUnavailable, "not ready: postgres unreachable\n"},
		{"alive while not ready", errors.New("postgres unreachable"), "/healthz", http.StatusOK, "ok\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notReady = tc.err
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode || string(body) != tc.wantBody {
				t.Errorf("GET %s: got %d %q, want %d %q", tc.path, resp.StatusCode, body, tc.wantCode, tc.wantBody)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type: got %q, want text/plain", ct)
			}
		})
	}
}
