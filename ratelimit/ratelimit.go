// Package ratelimit keeps one token bucket per key (a client address, an
// account), for the limits of the broker's HTTP edge: enrolment, logins,
// authenticated API calls and device-login approvals.
package ratelimit

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Keyed keeps one token bucket per key. Buckets idle for ten minutes are
// dropped, so the map cannot grow without bound.
type Keyed struct {
	mu      sync.Mutex
	r       rate.Limit
	burst   int
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	l    *rate.Limiter
	seen time.Time
}

// New returns a Keyed limiter allowing r events a second per key, in bursts
// of up to burst.
func New(r float64, burst int) *Keyed {
	return &Keyed{r: rate.Limit(r), burst: burst, buckets: map[string]*bucket{}, swept: time.Now()}
}

// Allow charges one event to key and reports whether it is within the limit.
func (l *Keyed) Allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > 10*time.Minute {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{l: rate.NewLimiter(l.r, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	return b.l.AllowN(now, 1)
}

// ClientAddr is the peer address of the request, the key of per-client
// limits. No proxy header is trusted: a reverse proxy in front should be
// configured to preserve the address.
func ClientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
