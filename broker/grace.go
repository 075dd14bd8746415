package broker

// The audit-outage grace. The store's health is noted by every call that
// fails (storeErr) or succeeds (storeOK); while it is down Open refuses at
// once (audit_unavailable), live sessions go on for AuditGrace with their
// ends held in memory (pending) and retried every CheckInterval (flush),
// and past the grace every live session ends (endIfGraceOver). Held ends
// are written, with their bytes, once Postgres answers again.

import (
	"context"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

// endIfGraceOver ends every live session once the store has been down for
// longer than AuditGrace: a broker that cannot read grants must not carry
// sessions on stale data.
func (m *Sessions) endIfGraceOver(live []*Session) {
	m.mu.Lock()
	down := m.downSince
	m.mu.Unlock()
	if down.IsZero() || m.cfg.Now().Sub(down) < m.cfg.AuditGrace {
		return
	}
	for _, s := range live {
		m.end(s, fieldpass.EndAuditUnavailable, true)
	}
}

// storeErr reports whether err means the store does not answer, and if so
// notes the outage.
func (m *Sessions) storeErr(err error) bool {
	if !storeUnavailable(err) {
		return false
	}
	m.cfg.Metrics.PostgresError()
	m.mu.Lock()
	if m.downSince.IsZero() {
		m.downSince = m.cfg.Now()
		m.log.Warn("audit store unavailable: new sessions refused; live sessions continue for the grace period",
			"grace", m.cfg.AuditGrace, "err", err)
	}
	m.mu.Unlock()
	return true
}

func (m *Sessions) storeOK() {
	m.mu.Lock()
	if !m.downSince.IsZero() {
		m.log.Info("audit store back", "down_for", m.cfg.Now().Sub(m.downSince).Round(time.Millisecond))
		m.downSince = time.Time{}
	}
	m.mu.Unlock()
}

// storeUnavailable reports whether err is Postgres (or the way to it) not
// answering, as opposed to a refusal or a bug.
func storeUnavailable(err error) bool {
	return fieldpass.ErrorCode(err) == fieldpass.EINTERNAL && postgres.Unavailable(err)
}

// write records s's end; on failure the end stays pending for flush.
func (m *Sessions) write(s *Session) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StoreTimeout)
	defer cancel()
	m.writeOne(ctx, s)
}

func (m *Sessions) writeOne(ctx context.Context, s *Session) bool {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	m.mu.Lock()
	_, ok := m.pending[s.rec.ID]
	m.mu.Unlock()
	if !ok {
		return true // written by another attempt
	}
	s.mu.Lock()
	at, reason := s.ended, s.reason
	s.mu.Unlock()
	if rc, cut, ok := s.unrecordedCounts(); ok {
		// The drops the session lived through go on its row before the
		// end, which freezes it.
		if err := m.db.SessionReconnectCounts(ctx, s.rec.ID, rc, cut); err != nil {
			if m.storeErr(err) {
				return false
			}
			m.log.Error("record the device reconnects of a session", "session", s.rec.ID, "err", err)
		} else {
			s.recordedCounts(rc, cut)
		}
	}
	start := time.Now()
	_, err := m.db.EndSessionWith(ctx, s.rec.ID, at, s.in.Load(), s.out.Load(), reason, s.endDetails())
	m.cfg.Metrics.AuditWrite("end_session", start)
	if err != nil {
		if !m.storeErr(err) {
			m.log.Error("record session end", "session", s.rec.ID, "err", err)
			if fieldpass.ErrorCode(err) != fieldpass.EINTERNAL {
				// Refused for good (invalid, not found): retrying cannot help.
				m.mu.Lock()
				delete(m.pending, s.rec.ID)
				m.mu.Unlock()
			}
		}
		return false
	}
	m.storeOK()
	m.mu.Lock()
	delete(m.pending, s.rec.ID)
	m.mu.Unlock()
	return true
}

// flush writes held ends, stopping at the first that fails on the store.
func (m *Sessions) flush(ctx context.Context) {
	m.mu.Lock()
	ss := make([]*Session, 0, len(m.pending))
	for _, s := range m.pending {
		ss = append(ss, s)
	}
	m.mu.Unlock()
	for _, s := range ss {
		if !m.writeOne(ctx, s) {
			m.mu.Lock()
			down := !m.downSince.IsZero()
			m.mu.Unlock()
			if down {
				return
			}
		}
	}
}
