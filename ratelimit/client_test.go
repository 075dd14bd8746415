package ratelimit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/fieldpass/fieldpass/ratelimit"
)

func TestProxiesClientAddr(t *testing.T) {
	p := ratelimit.NewProxies([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")})
	for _, tc := range []struct {
		name, remote string
		header       http.Header
		want         string
	}{
		{"no header", "127.0.0.1:1", nil, "127.0.0.1"},
		{"trusted peer, XFF", "127.0.0.1:1", http.Header{"X-Forwarded-For": {"198.51.100.7"}}, "198.51.100.7"},
		{"untrusted peer, XFF ignored", "192.0.2.1:1", http.Header{"X-Forwarded-For": {"198.51.100.7"}}, "192.0.2.1"},
		{"client-supplied entry before the real one", "127.0.0.1:1", http.Header{"X-Forwarded-For": {"6.6.6.6, 198.51.100.7"}}, "198.51.100.7"},
		{"chain of trusted proxies", "127.0.0.1:1", http.Header{"X-Forwarded-For": {"198.51.100.7, 10.1.2.3"}}, "198.51.100.7"},
		{"two header lines", "127.0.0.1:1", http.Header{"X-Forwarded-For": {"6.6.6.6", "198.51.100.7"}}, "198.51.100.7"},
		{"Forwarded wins", "127.0.0.1:1", http.Header{"Forwarded": {`for=198.51.100.8;proto=https`}, "X-Forwarded-For": {"198.51.100.7"}}, "198.51.100.8"},
		{"Forwarded IPv6 with port", "127.0.0.1:1", http.Header{"Forwarded": {`for="[2001:db8::17]:4711"`}}, "2001:db8::17"},
		{"Forwarded unknown stops at the proxy", "127.0.0.1:1", http.Header{"Forwarded": {`for=unknown`}}, "127.0.0.1"},
		{"garbage stops at the proxy", "127.0.0.1:1", http.Header{"X-Forwarded-For": {"not-an-ip"}}, "127.0.0.1"},
		{"4in6 peer", "[::ffff:127.0.0.1]:1", http.Header{"X-Forwarded-For": {"198.51.100.7"}}, "198.51.100.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			r.Header = tc.header
			if r.Header == nil {
				r.Header = http.Header{}
			}
			var got string
			p.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = ratelimit.ClientAddr(r) })).ServeHTTP(httptest.NewRecorder(), r)
			if got != tc.want {
				t.Errorf("client %q, want %q", got, tc.want)
			}
		})
	}
}

func TestClientKeyGroupsIPv6By64(t *testing.T) {
	if a, b := ratelimit.ClientKey("2001:db8:1:2::1"), ratelimit.ClientKey("2001:db8:1:2:ffff::9"); a != b {
		t.Errorf("one /64 gives keys %q and %q, want one", a, b)
	}
	if a, b := ratelimit.ClientKey("2001:db8:1:2::1"), ratelimit.ClientKey("2001:db8:1:3::1"); a == b {
		t.Error("two /64s share a key")
	}
	if got := ratelimit.ClientKey("192.0.2.7"); got != "192.0.2.7" {
		t.Errorf("IPv4 key %q", got)
	}
}

// TestKeyedBounded: issue 10 found the limiters' tables unbounded; a
// flood of fresh keys now costs a bounded table, evicting the least
// recently used.
func TestKeyedBounded(t *testing.T) {
	l := ratelimit.NewBounded(0.001, 1, 100)
	l.Allow("keep")
	for i := range 10_000 {
		if i%50 == 0 {
			l.Allow("keep") // used recently: never the one evicted
		}
		l.Allow(fmt.Sprintf("k%d", i))
	}
	if n := l.Len(); n > 100 {
		t.Fatalf("%d keys held, want at most 100", n)
	}
	if l.Allow("keep") {
		t.Fatal("a recently used key's exhausted bucket was evicted and refilled")
	}
}
