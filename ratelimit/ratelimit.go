// Package ratelimit keeps one token bucket per key (a client address, an
// account), for the limits of the broker's HTTP edge: enrolment, logins,
// failed authentication, authenticated API calls and device-login
// approvals. It is also the one place that decides a request's client
// address (ClientAddr, Proxies): what sessions, audit events and limits
// record.
package ratelimit

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds a Keyed limiter's table when New is given none.
const DefaultMaxKeys = 100_000

// idleAfter is how long a bucket may go unused before it is dropped: long
// enough for any of our buckets to have refilled.
const idleAfter = 10 * time.Minute

// Keyed keeps one token bucket per key, at most MaxKeys of them: past that
// the least recently used is dropped (it is the one most likely to have
// refilled), so a flood of fresh keys (IPv6 addresses, made-up accounts)
// costs bounded memory. Buckets idle for ten minutes are dropped too.
type Keyed struct {
	mu      sync.Mutex
	r       rate.Limit
	burst   int
	max     int
	buckets map[string]*list.Element // of *bucket
	lru     list.List                // front: most recently used
	swept   time.Time
	now     func() time.Time
}

type bucket struct {
	key  string
	l    *rate.Limiter
	seen time.Time
}

// New returns a Keyed limiter allowing r events a second per key, in bursts
// of up to burst, keeping at most DefaultMaxKeys keys.
func New(r float64, burst int) *Keyed {
	return NewBounded(r, burst, DefaultMaxKeys)
}

// NewBounded is New keeping at most maxKeys keys (at least 1).
func NewBounded(r float64, burst, maxKeys int) *Keyed {
	l := &Keyed{r: rate.Limit(r), burst: burst, max: max(maxKeys, 1), buckets: map[string]*list.Element{}, now: time.Now}
	l.swept = l.now()
	return l
}

// Allow charges one event to key and reports whether it is within the limit.
func (l *Keyed) Allow(key string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bucket(key, now).l.AllowN(now, 1)
}

// Len returns the number of keys held.
func (l *Keyed) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// bucket returns key's bucket, made if need be; l.mu is held.
func (l *Keyed) bucket(key string, now time.Time) *bucket {
	if now.Sub(l.swept) > time.Minute {
		for e := l.lru.Back(); e != nil; {
			b, prev := e.Value.(*bucket), e.Prev()
			if now.Sub(b.seen) <= idleAfter {
				break // the rest were used more recently
			}
			l.lru.Remove(e)
			delete(l.buckets, b.key)
			e = prev
		}
		l.swept = now
	}
	if e := l.buckets[key]; e != nil {
		l.lru.MoveToFront(e)
		b := e.Value.(*bucket)
		b.seen = now
		return b
	}
	for len(l.buckets) >= l.max {
		e := l.lru.Back()
		l.lru.Remove(e)
		delete(l.buckets, e.Value.(*bucket).key)
	}
	b := &bucket{key: key, l: rate.NewLimiter(l.r, l.burst), seen: now}
	l.buckets[key] = l.lru.PushFront(b)
	return b
}
