package apiserver

import (
	"context"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/fieldpass/fieldpass"
)

// handleSessionList lists sessions, newest first: all of them for admins
// and auditors, the caller's own for everyone else. Query: device, user,
// since (RFC 3339), open=true, limit.
func (s *Server) handleSessionList() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		q := newQuery(r)
		f := fieldpass.SessionFilter{
			Device: q.device("device"),
			User:   q.email("user"),
			Since:  q.time("since"),
			Open:   q.boolean("open"),
			Limit:  q.limit(),
		}
		if q.err != nil {
			s.writeError(w, r, q.err)
			return
		}
		if err := ownOnly(c, &f.User, "you may list only your own sessions"); err != nil {
			s.writeError(w, r, err)
			return
		}
		ss, err := s.cfg.DB.Sessions(r.Context(), f)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if ss == nil {
			ss = []*fieldpass.Session{}
		}
		writeJSON(w, http.StatusOK, ss)
	}
}

// handleSessionEnd ends an open session (admins: routes.go) with reason
// ended_by_admin. A session live on this broker is ended by the broker
// itself, which cuts its streams and records the real byte counts. One
// carried elsewhere (or left by a crash) is ended in the database; the
// broker that carries it follows the sessions table within a second.
func (s *Server) handleSessionEnd() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.caller(w, r)
		if c == nil {
			return
		}
		ctx := r.Context()
		cur, err := s.cfg.DB.Session(ctx, chi.URLParam(r, "id"))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if !cur.Open() {
			s.writeError(w, r, endedAlready(cur))
			return
		}
		if s.cfg.Sessions != nil && s.cfg.Sessions.EndSession(cur.ID, fieldpass.EndByAdmin) {
			out, err := s.waitEnded(ctx, cur.ID)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			s.log.Info("session ended by admin", "session", out.ID, "user", out.User, "device", out.Device, "by", c.User.Email)
			writeJSON(w, http.StatusOK, out)
			return
		}
		out, err := s.cfg.DB.EndSession(ctx, cur.ID, time.Time{}, cur.BytesIn, cur.BytesOut, fieldpass.EndByAdmin)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if out.EndReason != fieldpass.EndByAdmin {
			// Someone else's end was recorded first.
			s.writeError(w, r, endedAlready(out))
			return
		}
		s.log.Info("session ended by admin", "session", out.ID, "user", out.User, "device", out.Device, "by", c.User.Email)
		writeJSON(w, http.StatusOK, out)
	}
}

func endedAlready(ss *fieldpass.Session) error {
	return fieldpass.Errorf(fieldpass.ECONFLICT, "session %s already ended at %s (%s)",
		ss.ID, ss.End.Format(time.RFC3339), ss.EndReason)
}

// handleAuditList lists audit events in seq order (auditors and admins:
// routes.go). Query: since (RFC 3339), actor, action, target, limit.
func (s *Server) handleAuditList() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c := s.caller(w, r); c == nil {
			return
		}
		q := newQuery(r)
		f := fieldpass.AuditFilter{
			Since:  q.time("since"),
			Actor:  q.text("actor", maxParamLen),
			Action: q.text("action", maxParamLen),
			Target: q.text("target", maxParamLen),
			Limit:  q.limit(),
		}
		if q.err != nil {
			s.writeError(w, r, q.err)
			return
		}
		evs, err := s.cfg.DB.AuditEvents(r.Context(), f)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if evs == nil {
			evs = []fieldpass.AuditEvent{}
		}
		writeJSON(w, http.StatusOK, evs)
	}
}

// waitEnded waits (briefly) for the broker's write of a session's end.
func (s *Server) waitEnded(ctx context.Context, id string) (*fieldpass.Session, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := s.cfg.DB.Session(ctx, id)
		if err != nil {
			return nil, err
		}
		if !out.Open() || time.Now().After(deadline) {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
