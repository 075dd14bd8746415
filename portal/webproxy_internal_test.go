package portal

// Internal tests: the device web proxy's parsers and rewrites are pure
// functions of what a browser or a device sends, tested and fuzzed
// directly. The whole path runs in e2e/portal_web_test.go.

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func testPortal(domain, public string) *Portal {
	return New(Config{WebDomain: domain, PublicURL: public})
}

func TestWebHost(t *testing.T) {
	p := testPortal("localhost", "http://127.0.0.1:8080")
	if got := p.webHost("pump-7", "web"); got != "pump-7--web.localhost:8080" {
		t.Errorf("webHost = %q", got)
	}
	for _, svc := range []string{"a--b", "my_ui"} {
		if got := p.webHost("pump-7", svc); got != "" {
			t.Errorf("webHost(%q) = %q, want none (not one DNS label)", svc, got)
		}
	}
	if got := p.webHost(strings.Repeat("d", 60), "web"); got != "" {
		t.Errorf("webHost of a 65-character label = %q, want none", got)
	}
	for _, tc := range []struct {
		host, device, service string
		ok                    bool
	}{
		{"pump-7--web.localhost:8080", "pump-7", "web", true},
		{"PUMP-7--WEB.LOCALHOST:8080", "pump-7", "web", true},
		{"a--b--web.localhost", "a--b", "web", true}, // the last -- splits
		{"localhost:8080", "", "", false},
		{"pump-7.localhost", "", "", false},
		{"x.pump-7--web.localhost", "", "", false},
		{"pump-7--web.localhost.evil.example", "", "", false},
		{"--web.localhost", "", "", false},
		{"pump-7--.localhost", "", "", false},
		{"-x--web.localhost", "", "", false},
	} {
		d, s, ok := p.parseWebHost(tc.host)
		if d != tc.device || s != tc.service || ok != tc.ok {
			t.Errorf("parseWebHost(%q) = %q, %q, %v; want %q, %q, %v", tc.host, d, s, ok, tc.device, tc.service, tc.ok)
		}
	}
	if _, _, ok := testPortal("", "http://127.0.0.1:8080").parseWebHost("pump-7--web.localhost"); ok {
		t.Error("a portal without a web domain took a device origin")
	}
}

func FuzzParseWebHost(f *testing.F) {
	for _, s := range []string{"pump-7--web.localhost:8080", "a--b--c.localhost", "x.localhost", "", ":", "--.localhost", "é--x.localhost"} {
		f.Add(s)
	}
	p := testPortal("localhost", "http://127.0.0.1:8080")
	f.Fuzz(func(t *testing.T, host string) {
		d, s, ok := p.parseWebHost(host)
		if !ok {
			return
		}
		// Whatever it accepts names a valid device and service, and the
		// origin made from them parses back to them.
		if back := p.webHost(d, s); back != "" {
			d2, s2, ok2 := p.parseWebHost(back)
			if !ok2 || d2 != d || s2 != s {
				t.Fatalf("%q -> %q/%q -> %q -> %q/%q", host, d, s, back, d2, s2)
			}
		}
	})
}

func TestRewriteCSP(t *testing.T) {
	for in, want := range map[string]string{
		"default-src 'self' http://192.168.1.1; connect-src 'self' ws: http://192.168.1.1:8080": "default-src 'self' 'self'; connect-src 'self' ws: 'self'; frame-ancestors 'none'",
		"script-src https://cdn.example.com; frame-ancestors *":                                 "script-src https://cdn.example.com; frame-ancestors 'none'",
		"img-src http://10.0.0.1 data:":                                                         "img-src 'self' data:; frame-ancestors 'none'",
	} {
		if got := rewriteCSP(in); got != want {
			t.Errorf("rewriteCSP(%q)\n got %q\nwant %q", in, got, want)
		}
	}
}

func TestStripCookie(t *testing.T) {
	h := http.Header{}
	h.Add("Cookie", "sid=abc; fieldpass_web=secret; __Host-fieldpass_web=x")
	h.Add("Cookie", "fieldpass_session=portal; lang=en")
	stripCookie(h, "fieldpass_web")
	if got := h.Get("Cookie"); got != "sid=abc; lang=en" {
		t.Errorf("Cookie after strip: %q", got)
	}
}

func TestRewriteResponse(t *testing.T) {
	ws := &webSession{host: "pump-7--web.localhost:8080", origin: "http://pump-7--web.localhost:8080"}
	resp := &http.Response{StatusCode: 302, Header: http.Header{}}
	resp.Header.Set("Location", "http://192.168.1.1/login?next=%2F")
	for _, c := range []string{"sid=1; Domain=192.168.1.1; Path=/; HttpOnly", "fieldpass_session=stolen; Domain=localhost; Path=/",
		"__Host-fieldpass_web=x; Path=/; Secure", "spill=1; Domain=.localhost"} {
		resp.Header.Add("Set-Cookie", c)
	}
	resp.Header.Set("Access-Control-Allow-Origin", "*")
	resp.Header.Set("Access-Control-Allow-Credentials", "true")
	rewriteResponse(resp, ws, "fieldpass_web", false)
	if got := resp.Header.Get("Location"); got != "http://pump-7--web.localhost:8080/login?next=%2F" {
		t.Errorf("Location: %q", got)
	}
	cookies := resp.Header.Values("Set-Cookie")
	if len(cookies) != 2 || cookies[0] != "sid=1; Path=/; HttpOnly" || cookies[1] != "spill=1; Path=/" {
		t.Errorf("Set-Cookie: %q; want sid and spill, host-only, and no cookie named like the broker's", cookies)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Error("a wildcard CORS answer passed through")
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Error("no frame-ancestors on a device page")
	}
	// Elsewhere is the device's business: left alone.
	resp = &http.Response{StatusCode: 302, Header: http.Header{"Location": {"https://vendor.example/help"}}}
	rewriteResponse(resp, ws, "fieldpass_web", false)
	if got := resp.Header.Get("Location"); got != "https://vendor.example/help" {
		t.Errorf("external Location rewritten to %q", got)
	}
}

func TestRewriteBody(t *testing.T) {
	body := `<a href="http://192.168.1.1/status">s</a><script src="http://192.168.1.1:80/a.js"></script>
<img src="https://10.1.2.3/x.png"> new WebSocket("ws://192.168.1.1/live"); <a href="https://vendor.example/">v</a>`
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/html; charset=utf-8"}},
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}
	if err := rewriteBody(resp, "https://pump-7--web.devices.example"); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	want := `<a href="https://pump-7--web.devices.example/status">s</a><script src="https://pump-7--web.devices.example/a.js"></script>
<img src="https://pump-7--web.devices.example/x.png"> new WebSocket("wss://pump-7--web.devices.example/live"); <a href="https://vendor.example/">v</a>`
	if string(got) != want || resp.ContentLength != int64(len(want)) {
		t.Errorf("rewritten body:\n%s\nwant\n%s", got, want)
	}
	// Not text: untouched.
	resp = &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"image/png"}}, Body: io.NopCloser(strings.NewReader("http://192.168.1.1"))}
	rewriteBody(resp, "https://x")
	if b, _ := io.ReadAll(resp.Body); string(b) != "http://192.168.1.1" {
		t.Errorf("an image was rewritten: %q", b)
	}
}

// TestSessionCookieName: over https the login cookie is __Host- prefixed,
// and a cookie under the plain name (which a sibling host could set) is not
// taken for a session.
func TestSessionCookieName(t *testing.T) {
	secure := New(Config{PublicURL: "https://broker.example.com"})
	if got := secure.sessionCookieName(); got != "__Host-fieldpass_session" {
		t.Fatalf("https portal's cookie: %q", got)
	}
	r, _ := http.NewRequest("GET", "https://broker.example.com/devices", nil)
	r.AddCookie(&http.Cookie{Name: SessionCookie, Value: "planted"})
	if got := secure.SessionToken(r); got != "" {
		t.Errorf("an https portal took the plain-named cookie %q", got)
	}
	r.AddCookie(&http.Cookie{Name: SecureSessionCookie, Value: "real"})
	if got := secure.SessionToken(r); got != "real" {
		t.Errorf("SessionToken = %q, want the __Host- cookie", got)
	}
	if got := New(Config{PublicURL: "http://127.0.0.1:8080"}).sessionCookieName(); got != SessionCookie {
		t.Errorf("loopback http portal's cookie: %q", got)
	}
}
