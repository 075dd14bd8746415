package ratelimit_test

import (
	"net/http/httptest"
	"testing"

	"github.com/fieldpass/fieldpass/ratelimit"
)

func TestKeyedBurstPerKey(t *testing.T) {
	l := ratelimit.New(0.001, 3) // refills far slower than the test runs
	for i := range 3 {
		if !l.Allow("a") {
			t.Fatalf("event %d of a's burst refused", i+1)
		}
	}
	if l.Allow("a") {
		t.Fatal("a's fourth event allowed past a burst of 3")
	}
	if !l.Allow("b") {
		t.Fatal("b refused: keys must not share a bucket")
	}
}

func TestClientAddr(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.7:4242", "192.0.2.7"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"no-port", "no-port"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		r.Header.Set("X-Forwarded-For", "203.0.113.9") // never trusted
		if got := ratelimit.ClientAddr(r); got != tc.want {
			t.Errorf("ClientAddr(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}
