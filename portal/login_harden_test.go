package portal_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/httpapi"
)

// startFrom starts a device login at the handler directly, as a client at
// addr would.
func (e *loginEnv) startFrom(t *testing.T, addr string) (int, httpapi.DeviceLoginStart) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/api/v1/login/device", strings.NewReader(""))
	r.RemoteAddr = addr
	r.Header.Set("User-Agent", "fieldpass/1.2.3")
	w := httptest.NewRecorder()
	e.portal.HandleDeviceLoginStart().ServeHTTP(w, r)
	var s httpapi.DeviceLoginStart
	if w.Code == http.StatusOK {
		json.Unmarshal(w.Body.Bytes(), &s)
	}
	return w.Code, s
}

// TestDeviceLoginFloodCannotBlockLogins: issue 10 started 10 logins from
// each of 1,000 IPv6 addresses, without logging in, and a legitimate start
// then got 503 for ten minutes. Pending logins are now capped per client
// (IPv6 by /64) and, past the global cap, the oldest of the biggest
// holder is dropped: a flood evicts itself, not the others.
func TestDeviceLoginFloodCannotBlockLogins(t *testing.T) {
	e := newLoginEnv(t)
	c := &cli{t: t, e: e}
	before := c.start() // a person's login, already waiting
	for i := range 1000 {
		for j := range 10 {
			e.startFrom(t, fmt.Sprintf("[2001:db8:%x::%x]:4242", i, j+1))
		}
	}
	if code, _ := e.startFrom(t, "192.0.2.1:4242"); code != http.StatusOK {
		t.Fatalf("a legitimate start after the flood: %d, want 200", code)
	}
	// More networks than the global cap holds at five each.
	for i := range 3000 {
		for j := range 5 {
			e.startFrom(t, fmt.Sprintf("[2001:db8:1:%x::%x]:4242", i, j+1))
		}
	}
	if code, _ := e.startFrom(t, "192.0.2.2:4242"); code != http.StatusOK {
		t.Fatalf("a legitimate start after the second flood: %d, want 200", code)
	}
	wantPoll(t, c, before.DeviceCode, "authorization_pending")
}

// TestDeviceLoginPageMustBeTyped: issue 10 phished a login with one click:
// the link /login/device?user_code=XXXX-XXXX pre-filled the code, and the
// page showed only the starting address. Now the code must be typed, and
// the approval shows what is approved (client, address, time) before the
// Approve button.
func TestDeviceLoginPageMustBeTyped(t *testing.T) {
	e := newLoginEnv(t)
	c := &cli{t: t, e: e}
	s := c.start()
	b := e.browser()
	location(t, b.login("", alice()))
	resp := b.get("/login/device?user_code=" + url.QueryEscape(s.UserCode))
	body := readBody(t, resp)
	if strings.Contains(body, s.UserCode) {
		t.Errorf("the page pre-fills the code from the link")
	}
	if strings.Contains(body, `value="approve"`) {
		t.Errorf("the first page offers Approve before the code is typed")
	}
	resp = b.postForm("/login/device", url.Values{"csrf": {b.csrf()}, "user_code": {strings.ToLower(s.UserCode)}, "action": {"review"}})
	wantStatus(t, resp, http.StatusOK, `value="approve"`, "Go-http-client/", "127.0.0.1", "alice@example.com", "Started at")
	wantStatus(t, b.postForm("/login/device", url.Values{"csrf": {b.csrf()}, "user_code": {s.UserCode}, "action": {"approve"}}), http.StatusOK, "Login approved")
	tok, code := c.poll(s.DeviceCode)
	if code != "" {
		t.Fatalf("poll: %s", code)
	}
	// The CLI token lasts 12 hours by default, the portal login's length,
	// not 30 days.
	if d := time.Until(tok.ExpiresAt); d > 12*time.Hour+time.Minute {
		t.Errorf("CLI token lasts %s, want at most 12h", d.Round(time.Hour))
	}
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return buf.String()
}
