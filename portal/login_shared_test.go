package portal_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/portal"
)

// front is the address people use, in front of several brokers: each
// request goes to the broker it is pointed at.
type front struct{ h atomic.Pointer[http.Handler] }

func (f *front) to(h http.Handler) { f.h.Store(&h) }

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) { (*f.h.Load()).ServeHTTP(w, r) }

// broker is one more broker on the env's database and address: its own
// Portal (its own memory) and API.
type broker struct {
	portal *portal.Portal
	api    http.Handler
}

func (e *loginEnv) otherBroker() broker {
	p := portal.New(e.cfg)
	return broker{portal: p, api: apiserver.New(apiserver.Config{
		DB: e.db, Portal: p, PublicURL: e.cfg.PublicURL,
		EnrollRate: 1000, EnrollBurst: 1000,
		Logger: e.cfg.Logger, Now: e.clock.Now,
	}).Handler()}
}

// TestDeviceLoginAcrossBrokers: two brokers share one database behind one
// address. The CLI starts on one, the person reviews and approves on the
// other, the CLI's polls land on either: the token is issued once.
func TestDeviceLoginAcrossBrokers(t *testing.T) {
	e := newLoginEnv(t)
	ctx := context.Background()
	a, b := e.api.Handler(), e.otherBroker()
	c := &cli{t: t, e: e}

	e.front.to(a)
	s := c.start()
	wantPoll(t, c, s.DeviceCode, "authorization_pending")

	// The person's browser lands on the other broker, logs in there, and
	// approves the login the first one started.
	e.front.to(b.api)
	br := e.browser()
	location(t, br.login("", alice()))
	wantStatus(t, br.postForm("/login/device", url.Values{"csrf": {br.csrf()}, "user_code": {s.UserCode}, "action": {"review"}}),
		http.StatusOK, `value="`+s.UserCode+`"`, "127.0.0.1", "Go-http-client") // the start's client, as the first broker recorded it
	// The poll interval is kept across brokers too: a poll on b at once
	// after the one on a is too fast.
	wantPoll(t, c, s.DeviceCode, "slow_down")
	e.clock.Add(11 * time.Second)
	wantStatus(t, br.postForm("/login/device", url.Values{"csrf": {br.csrf()}, "user_code": {s.UserCode}, "action": {"approve"}}),
		http.StatusOK, "Login approved")

	e.front.to(a)
	tok, code := c.poll(s.DeviceCode)
	if code != "" {
		t.Fatalf("poll on the starting broker after approval on the other: %s", code)
	}
	if tok.Email != "alice@example.com" {
		t.Errorf("token for %s", tok.Email)
	}
	e.clock.Add(11 * time.Second)
	e.front.to(b.api)
	wantPoll(t, c, s.DeviceCode, "expired") // used, on either broker
	e.front.to(a)
	wantPoll(t, c, s.DeviceCode, "expired")
	if got := e.deviceLogins(t); got != 1 {
		t.Errorf("%d device logins recorded, want 1", got)
	}
	_, rec, err := e.db.Authenticate(ctx, tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	if e.portal.MFAAsserted(ctx, rec) || b.portal.MFAAsserted(ctx, rec) {
		t.Errorf("CLI token claims MFA its session did not have")
	}
}

// TestDeviceLoginPollRace: the CLI's polls for an approved login reach two
// brokers at once (a retry through the load balancer): one gets the token,
// the other does not, every time.
func TestDeviceLoginPollRace(t *testing.T) {
	e := newLoginEnv(t)
	b := e.otherBroker()
	apis := []http.Handler{e.api.Handler(), b.api}
	polls := []http.Handler{e.portal.HandleDeviceLoginToken(), b.portal.HandleDeviceLoginToken()}
	c := &cli{t: t, e: e}
	br := e.browser()
	location(t, br.login("", alice()))
	const rounds = 10 // within each broker's burst of approvals
	for i := range rounds {
		e.front.to(apis[i%2])
		s := c.start()
		e.front.to(apis[(i+1)%2])
		wantStatus(t, br.postForm("/login/device", url.Values{"csrf": {br.csrf()}, "user_code": {s.UserCode}, "action": {"approve"}}),
			http.StatusOK, "Login approved")
		var wg sync.WaitGroup
		codes := make([]int, 2)
		bodies := make([]string, 2)
		start := make(chan struct{})
		for j, h := range polls {
			wg.Go(func() {
				body, _ := json.Marshal(httpapi.DeviceLoginPoll{DeviceCode: s.DeviceCode})
				r := httptest.NewRequest(http.MethodPost, "/api/v1/login/device/token", strings.NewReader(string(body)))
				r.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				<-start
				h.ServeHTTP(w, r)
				codes[j], bodies[j] = w.Code, w.Body.String()
			})
		}
		close(start)
		wg.Wait()
		if (codes[0] == http.StatusOK) == (codes[1] == http.StatusOK) {
			t.Fatalf("round %d: polls answered %d %s and %d %s, want one token", i, codes[0], bodies[0], codes[1], bodies[1])
		}
		e.clock.Add(11 * time.Second)
		wantPoll(t, c, s.DeviceCode, "expired")
	}
	if got := e.deviceLogins(t); got != rounds {
		t.Errorf("%d device logins recorded, want %d", got, rounds)
	}
}

// deviceLogins counts the user.login events of the device flow.
func (e *loginEnv) deviceLogins(t *testing.T) int {
	t.Helper()
	evs, err := e.db.AuditEvents(context.Background(), fieldpass.AuditFilter{Action: portal.AuditUserLogin})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Details["method"] == "device" {
			n++
		}
	}
	return n
}
