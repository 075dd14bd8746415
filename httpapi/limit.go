package httpapi

import (
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/fieldpass/fieldpass"
)

// limiter keeps one token bucket per client address. Buckets idle for ten
// minutes are dropped so the map cannot grow without bound.
type limiter struct {
	mu      sync.Mutex
	r       rate.Limit
	burst   int
	clients map[string]*bucket
	swept   time.Time
}

type bucket struct {
	l    *rate.Limiter
	seen time.Time
}

func newLimiter(r float64, burst int) *limiter {
	return &limiter{r: rate.Limit(r), burst: burst, clients: map[string]*bucket{}, swept: time.Now()}
}

func (l *limiter) allow(client string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		for k, b := range l.clients {
			if now.Sub(b.seen) > 10*time.Minute {
				delete(l.clients, k)
			}
		}
		l.swept = now
	}
	b := l.clients[client]
	if b == nil {
		b = &bucket{l: rate.NewLimiter(l.r, l.burst)}
		l.clients[client] = b
	}
	b.seen = now
	return b.l.AllowN(now, 1)
}

func (s *Server) limit(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.limiter.allow(clientAddr(r)) {
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"code": fieldpass.EUNAVAILABLE, "message": "too many requests; try again shortly"})
			return
		}
		next(w, r)
	}
}
