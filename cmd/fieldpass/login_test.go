package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/tunnel"
)

// loginServer speaks the device-login endpoints: each poll gets the next
// answer from answers (an error code, or "" for the token).
func loginServer(t *testing.T, answers ...string) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/login/device", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("login start sent a token")
		}
		json.NewEncoder(w).Encode(httpapi.DeviceLoginStart{DeviceCode: "dev-code", UserCode: "WXYZ-1234",
			VerificationURI: "https://broker.example.com/login/device", ExpiresIn: 600, Interval: 1})
	})
	mux.HandleFunc("POST /api/v1/login/device/token", func(w http.ResponseWriter, r *http.Request) {
		var p httpapi.DeviceLoginPoll
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil || p.DeviceCode != "dev-code" {
			t.Errorf("poll with %+v, %v", p, err)
		}
		mu.Lock()
		a := answers[0]
		if len(answers) > 1 {
			answers = answers[1:]
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if a != "" {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(tunnel.ErrorResponse{Code: a, Message: "poll says " + a})
			return
		}
		json.NewEncoder(w).Encode(httpapi.DeviceLoginToken{Token: tokenA, Email: "alice@example.com",
			ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// sleeps makes e record its waits instead of sleeping.
func sleeps(e *env) *[]time.Duration {
	var got []time.Duration
	e.sleep = func(ctx context.Context, d time.Duration) error { got = append(got, d); return ctx.Err() }
	return &got
}

func TestLogin(t *testing.T) {
	srv := loginServer(t, "authorization_pending", "slow_down", "authorization_pending", "unavailable", "")
	e, stdout, stderr := testEnv(t, nil)
	waits := sleeps(e)
	r := runEnv(t, e, stdout, stderr, "login", "--broker", srv.URL)
	if r.err != nil {
		t.Fatalf("login: %v\n%s", r.err, r.stderr)
	}
	if !strings.Contains(r.stdout, "open https://broker.example.com/login/device and enter the code WXYZ-1234") {
		t.Errorf("login did not show the URL and code:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "as alice@example.com") || strings.Contains(r.stdout+r.stderr, tokenA) {
		t.Errorf("login output:\n%s%s", r.stdout, r.stderr)
	}
	// slow_down adds 5 s to every later wait.
	want := []time.Duration{time.Second, time.Second, 6 * time.Second, 6 * time.Second, 6 * time.Second}
	if len(*waits) != len(want) {
		t.Fatalf("waits %v, want %v", *waits, want)
	}
	for i := range want {
		if (*waits)[i] != want[i] {
			t.Fatalf("waits %v, want %v", *waits, want)
		}
	}
	c, err := e.loadConfig()
	if err != nil || c.Token != tokenA || c.Broker != srv.URL || c.Email != "alice@example.com" {
		t.Errorf("saved %+v, %v", c, err)
	}
	path, _ := e.configPath()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config file: %v, %v", fi.Mode(), err)
	}

	// The next command uses the saved login: a second login without
	// --broker reuses the saved broker too.
	got, err := e.credentials()
	if err != nil || got.Token != tokenA || got.Broker != srv.URL {
		t.Errorf("credentials after login: %+v, %v", got, err)
	}
}

func TestLoginFails(t *testing.T) {
	for _, tc := range []struct {
		answers []string
		want    string
	}{
		{[]string{"authorization_pending", "expired"}, "expired"},
		{[]string{"denied"}, "denied"},
		{[]string{"invalid"}, "poll says invalid"},
	} {
		t.Run(tc.answers[len(tc.answers)-1], func(t *testing.T) {
			srv := loginServer(t, tc.answers...)
			e, stdout, stderr := testEnv(t, nil)
			sleeps(e)
			r := runEnv(t, e, stdout, stderr, "login", "--broker", srv.URL)
			if r.code != 1 || !strings.Contains(message(r.err), tc.want) {
				t.Fatalf("exit %d, %v; want 1 and %q", r.code, r.err, tc.want)
			}
			if c, _ := e.loadConfig(); c.Token != "" {
				t.Error("a failed login saved a token")
			}
		})
	}
}

func TestLoginNeedsBroker(t *testing.T) {
	r := runCLI(t, nil, "login")
	if r.code != 2 || !strings.Contains(message(r.err), "--broker") {
		t.Fatalf("login without a broker: exit %d, %v", r.code, r.err)
	}
	r = runCLI(t, nil, "login", "--broker", "http://broker.example.com")
	if r.code != 1 || !strings.Contains(message(r.err), "refusing plain http") {
		t.Fatalf("plain http: exit %d, %v", r.code, r.err)
	}
}

// TestLoginTimesOut: the code's own expiry bounds the polling even if the
// broker keeps saying pending.
func TestLoginTimesOut(t *testing.T) {
	srv := loginServer(t, "authorization_pending")
	e, stdout, stderr := testEnv(t, nil)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	e.now = func() time.Time { return now }
	e.sleep = func(ctx context.Context, d time.Duration) error { now = now.Add(d); return nil }
	r := runEnv(t, e, stdout, stderr, "login", "--broker", srv.URL)
	if r.code != 1 || !strings.Contains(message(r.err), "expired") {
		t.Fatalf("exit %d, %v; want expired", r.code, r.err)
	}
}
