package broker

// Enforcement: live sessions end within a second once their grant, user or
// device no longer lets them go on. Grant and user notifications are
// followed by worker; checkLoop reads the open rows back every
// CheckInterval (an admin's end), ends idle sessions, and drives the
// store-outage grace (grace.go); watchDevice follows each session's device
// across its reconnects (reconnect.go).
// The grant's end needs none of these: a timer set by Open fires it.

import (
	"context"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

// notify records a grant or user change for the worker; "" for both means
// reload everything (the listener reconnected).
func (m *Sessions) notify(grantID, email string) {
	m.gen.Add(1)
	m.mu.Lock()
	switch {
	case grantID != "":
		m.dirtyG[grantID] = true
	case email != "":
		m.dirtyU[email] = true
	default:
		m.reloadAll = true
	}
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// worker re-reads the grants and users that notifications named.
func (m *Sessions) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		}
		m.mu.Lock()
		grants, users := m.dirtyG, m.dirtyU
		m.dirtyG, m.dirtyU = map[string]bool{}, map[string]bool{}
		if m.reloadAll {
			m.reloadAll = false
			for _, s := range m.live {
				grants[s.rec.GrantID] = true
				users[s.rec.User] = true
			}
		}
		m.mu.Unlock()
		for id := range grants {
			m.recheckGrant(ctx, id)
		}
		for email := range users {
			m.recheckUser(ctx, email)
		}
	}
}

// sessionsWhere returns the live sessions f selects.
func (m *Sessions) sessionsWhere(f func(*Session) bool) []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Session
	for _, s := range m.live {
		if f(s) {
			out = append(out, s)
		}
	}
	return out
}

// recheckGrant ends the live sessions of grant id if it no longer holds.
func (m *Sessions) recheckGrant(ctx context.Context, id string) {
	ss := m.sessionsWhere(func(s *Session) bool { return s.rec.GrantID == id })
	if len(ss) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	defer cancel()
	g, err := m.db.Grant(ctx, id)
	if err != nil {
		if !m.storeErr(err) {
			m.log.Warn("re-read grant", "grant", id, "err", err)
		}
		return
	}
	now := m.cfg.Now()
	for _, s := range ss {
		switch {
		case g.Revoked():
			m.end(s, fieldpass.EndGrantRevoked, true)
		case !g.ActiveAt(now):
			m.end(s, fieldpass.EndGrantExpired, true)
		}
	}
}

// recheckUser ends the live sessions of a disabled user.
func (m *Sessions) recheckUser(ctx context.Context, email string) {
	ss := m.sessionsWhere(func(s *Session) bool { return s.rec.User == email })
	if len(ss) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	defer cancel()
	u, err := m.db.User(ctx, email)
	if err != nil && fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND {
		if !m.storeErr(err) {
			m.log.Warn("re-read user", "user", email, "err", err)
		}
		return
	}
	if err == nil && !u.Disabled {
		return
	}
	for _, s := range ss {
		m.end(s, fieldpass.EndUserDisabled, true)
	}
}

// checkLoop runs check every CheckInterval.
func (m *Sessions) checkLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.check(ctx)
	}
}

// check ends idle sessions and those whose row was ended elsewhere (an
// admin), tracks the store's health, ends every live session once the store
// has been down past AuditGrace, and writes held ends.
func (m *Sessions) check(ctx context.Context) {
	now := m.cfg.Now()
	m.denials.roll(now)
	m.mu.Lock()
	var live, idle []*Session
	var oldest time.Time
	for _, s := range m.live {
		live = append(live, s)
		if total := s.in.Load() + s.out.Load(); total != s.lastTotal {
			s.lastTotal, s.lastActive = total, now
		}
		if m.cfg.IdleTimeout > 0 && now.Sub(s.lastActive) >= m.cfg.IdleTimeout {
			idle = append(idle, s)
		}
		if oldest.IsZero() || s.rec.Start.Before(oldest) {
			oldest = s.rec.Start
		}
	}
	npending := len(m.pending)
	down := m.downSince
	var moved []postgres.SessionBytes
	if now.Sub(m.bytesAt) >= m.cfg.BytesInterval {
		m.bytesAt = now
		for _, s := range live {
			in, out := s.in.Load(), s.out.Load()
			if in != s.flushedIn || out != s.flushedOut {
				s.flushedIn, s.flushedOut = in, out
				moved = append(moved, postgres.SessionBytes{ID: s.rec.ID, In: in, Out: out})
			}
		}
	}
	m.mu.Unlock()

	for _, s := range idle {
		m.end(s, fieldpass.EndIdleTimeout, true)
	}
	if len(live) == 0 && npending == 0 && down.IsZero() {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	defer cancel()
	if len(live) > 0 || !down.IsZero() {
		f := fieldpass.SessionFilter{Open: true, Since: oldest}
		if oldest.IsZero() {
			f.Since = now // only a health check
		}
		open, err := m.db.Sessions(qctx, f)
		if err != nil {
			if ctx.Err() == nil {
				m.storeErr(err)
				m.endIfGraceOver(live)
			}
			return
		}
		m.storeOK()
		if len(moved) > 0 {
			// Only for people reading open rows: a failure costs nothing
			// but freshness, and the end writes the true counts.
			if err := m.db.SessionBytesSoFar(qctx, moved); err != nil {
				m.log.Warn("write live byte counts", "sessions", len(moved), "err", err)
			}
		}
		isOpen := make(map[string]bool, len(open))
		for _, s := range open {
			isOpen[s.ID] = true
		}
		for _, s := range live {
			if isOpen[s.rec.ID] {
				continue
			}
			// Not in the page: confirm before cutting.
			row, err := m.db.Session(qctx, s.rec.ID)
			if err == nil && !row.Open() {
				m.endRecorded(s, row.EndReason)
			}
		}
	}
	m.flush(qctx)
}
