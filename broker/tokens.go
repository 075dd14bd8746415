package broker

// Tokens: a session lives no longer than the broker token it was opened
// with. Revoking that token (an admin, or the person logging out) ends its
// sessions within a second, announced by the store on
// postgres.TokensChannel; its expiry ends them by a timer. Without this a
// stolen or revoked token, refused for every new request, would go on
// carrying bytes in the sessions it had already opened (issue 10).

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldpass/fieldpass"
)

// tokenBook knows which live sessions each token opened.
type tokenBook struct {
	// gen counts token notifications, so that Open can tell whether one
	// arrived while it was committing a session.
	gen  atomic.Uint64
	kick chan struct{}

	mu        sync.Mutex // guards the fields below
	sessions  map[string]map[*Session]struct{}
	dirty     map[string]bool // tokens to re-read
	reloadAll bool
}

func newTokenBook() *tokenBook {
	return &tokenBook{
		kick:     make(chan struct{}, 1),
		sessions: map[string]map[*Session]struct{}{},
		dirty:    map[string]bool{},
	}
}

func (b *tokenBook) add(id string, s *Session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sessions[id] == nil {
		b.sessions[id] = map[*Session]struct{}{}
	}
	b.sessions[id][s] = struct{}{}
}

func (b *tokenBook) remove(id string, s *Session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.sessions[id], s)
	if len(b.sessions[id]) == 0 {
		delete(b.sessions, id)
	}
}

func (b *tokenBook) of(id string) []*Session {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*Session, 0, len(b.sessions[id]))
	for s := range b.sessions[id] {
		out = append(out, s)
	}
	return out
}

// notify records a token revocation for the worker; "" means re-read every
// token in use (the listener reconnected).
func (b *tokenBook) notify(id string) {
	b.gen.Add(1)
	b.mu.Lock()
	if id == "" {
		b.reloadAll = true
	} else {
		b.dirty[id] = true
	}
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// take returns the tokens to re-read and clears them.
func (b *tokenBook) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := b.dirty
	b.dirty = map[string]bool{}
	if b.reloadAll {
		b.reloadAll = false
		for id := range b.sessions {
			ids[id] = true
		}
	}
	out := make([]string, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	return out
}

// followTokens ends sessions whose token is revoked, until ctx ends.
func (m *Sessions) followTokens(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.db.ListenTokens(ctx, m.tokens.notify)
	}()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-m.tokens.kick:
		}
		for _, id := range m.tokens.take() {
			m.recheckToken(ctx, id)
		}
	}
}

// recheckToken ends the live sessions token id opened if it no longer
// holds: revoked by its owner (logged_out), by anyone else
// (token_revoked), or expired.
func (m *Sessions) recheckToken(ctx context.Context, id string) {
	ss := m.tokens.of(id)
	if len(ss) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	defer cancel()
	t, err := m.db.Token(ctx, id)
	if err != nil {
		if !m.storeErr(err) {
			m.log.Warn("re-read token", "token_id", id, "err", err)
		}
		return
	}
	var reason fieldpass.EndReason
	switch {
	case !t.RevokedAt.IsZero() && t.RevokedBy == fieldpass.UserActor(t.Email):
		reason = fieldpass.EndLoggedOut
	case !t.RevokedAt.IsZero():
		reason = fieldpass.EndTokenRevoked
	case !m.cfg.Now().Before(t.ExpiresAt):
		reason = fieldpass.EndTokenExpired
	default:
		return
	}
	for _, s := range ss {
		m.end(s, reason, true)
	}
}

// checkToken refuses a caller whose token, as authenticated, no longer
// holds at now; the store checks it again as it commits the session.
func checkToken(t *fieldpass.Token, now time.Time) error {
	if t == nil {
		return nil
	}
	return fieldpass.Deny(fieldpass.DenyUnauthenticated, t.Held(now))
}

// bindToken makes s live no longer than token t: it ends at t's expiry
// (token_expired), and recheckToken finds it when t is revoked. gen is the
// token notifications' count before s's row was committed: a revocation
// announced since may have missed s, so t is read again.
func (m *Sessions) bindToken(ctx context.Context, s *Session, t *fieldpass.Token, gen uint64) {
	if t == nil {
		return
	}
	m.tokens.add(t.ID, s)
	go func() {
		timer := time.NewTimer(t.ExpiresAt.Sub(m.cfg.Now()))
		defer timer.Stop()
		select {
		case <-s.done:
		case <-timer.C:
			m.end(s, fieldpass.EndTokenExpired, true)
		}
		m.tokens.remove(t.ID, s)
	}()
	if m.tokens.gen.Load() != gen {
		m.recheckToken(ctx, t.ID)
	}
}
