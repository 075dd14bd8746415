package access

import (
	"context"
	"errors"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

// Sessions lists sessions, newest first: any for admins and auditors, the
// caller's own for everyone else (f.User naming another is refused).
func (s *Service) Sessions(ctx context.Context, c *fieldpass.Caller, f fieldpass.SessionFilter) ([]*fieldpass.Session, error) {
	if err := loggedIn(c); err != nil {
		return nil, err
	}
	if err := s.ownOnly(c, OpSessionList, &f.User, "you may list only your own sessions"); err != nil {
		return nil, err
	}
	ss, err := s.cfg.DB.Sessions(ctx, f)
	if ss == nil && err == nil {
		ss = []*fieldpass.Session{}
	}
	return ss, err
}

// Session is one session, to its person or to an admin or auditor. To
// anyone else it does not exist.
func (s *Service) Session(ctx context.Context, c *fieldpass.Caller, id string) (*fieldpass.Session, error) {
	if err := loggedIn(c); err != nil {
		return nil, err
	}
	ss, err := s.cfg.DB.Session(ctx, id)
	if err == nil && ss.User != c.User.Email && !SeesAll(c) {
		err = fieldpass.Errorf(fieldpass.ENOTFOUND, "session %s not found", id)
	}
	return ss, err
}

// EndSession ends an open session (admins only) with reason ended_by_admin;
// why, the admin's words, is recorded in the audit log first (it may be
// empty through the API).
// A session live on this broker, or on the broker of the fleet that holds
// it (asked over brokerlink), is ended by that broker's session manager,
// which cuts its streams, tells the person why and records the real byte
// counts before this returns. One whose broker cannot be asked (gone, or
// left by a crash) is ended in the database; a broker that still carries
// it follows the sessions table within a second.
func (s *Service) EndSession(ctx context.Context, c *fieldpass.Caller, id, why string) (*fieldpass.Session, error) {
	if err := s.Allow(c, fieldpass.AuditSessionEndAsked, postgres.SessionTarget(id), fieldpass.RoleAdmin); err != nil {
		return nil, err
	}
	cur, err := s.cfg.DB.Session(ctx, id)
	if err != nil {
		return nil, err
	}
	if !cur.Open() {
		return nil, endedAlready(cur)
	}
	if _, err := s.cfg.DB.AppendAudit(ctx, fieldpass.AuditEvent{Actor: fieldpass.UserActor(c.User.Email), Action: fieldpass.AuditSessionEndAsked,
		Target: postgres.SessionTarget(cur.ID), Details: map[string]any{"why": why, "user": cur.User, "device": cur.Device, "service": cur.Service}}); err != nil {
		return nil, err
	}
	var out *fieldpass.Session
	handled := false
	if s.cfg.Sessions != nil {
		if out, handled, err = s.cfg.Sessions.EndSessionAnywhere(ctx, cur, fieldpass.EndByAdmin); err != nil {
			return nil, err
		}
	}
	if !handled {
		if out, err = s.cfg.DB.EndSession(ctx, cur.ID, time.Time{}, cur.BytesIn, cur.BytesOut, fieldpass.EndByAdmin); err != nil {
			return nil, err
		}
	}
	if out.EndReason != fieldpass.EndByAdmin {
		// Someone else's end was recorded first.
		return nil, endedAlready(out)
	}
	s.log.Info("session ended by admin", "session", out.ID, "user", out.User, "device", out.Device, "by", c.User.Email)
	return out, nil
}

func endedAlready(ss *fieldpass.Session) error {
	return fieldpass.Errorf(fieldpass.ECONFLICT, "session %s already ended at %s (%s)",
		ss.ID, ss.End.Format(time.RFC3339), ss.EndReason)
}

// AuditEvents lists audit events in seq order (auditors and admins).
func (s *Service) AuditEvents(ctx context.Context, c *fieldpass.Caller, f fieldpass.AuditFilter) ([]fieldpass.AuditEvent, error) {
	if err := s.Allow(c, OpAuditRead, "", fieldpass.RoleAuditor, fieldpass.RoleAdmin); err != nil {
		return nil, err
	}
	evs, err := s.cfg.DB.AuditEvents(ctx, f)
	if evs == nil && err == nil {
		evs = []fieldpass.AuditEvent{}
	}
	return evs, err
}

// DeviceHistory lists a device's connectivity history, newest first
// (auditors and admins).
func (s *Service) DeviceHistory(ctx context.Context, c *fieldpass.Caller, name string, since time.Time, limit int) ([]*fieldpass.DeviceEvent, error) {
	if err := s.Allow(c, OpDeviceHistory, postgres.DeviceTarget(name), fieldpass.RoleAuditor, fieldpass.RoleAdmin); err != nil {
		return nil, err
	}
	evs, err := s.cfg.DB.DeviceHistory(ctx, name, since, limit)
	if evs == nil && err == nil {
		evs = []*fieldpass.DeviceEvent{}
	}
	return evs, err
}

// StaleReport reports forgotten devices, grants and vendor accounts
// (auditors and admins).
func (s *Service) StaleReport(ctx context.Context, c *fieldpass.Caller, opts fieldpass.StaleOptions) (*fieldpass.StaleReport, error) {
	if err := s.Allow(c, OpStaleReport, "", fieldpass.RoleAuditor, fieldpass.RoleAdmin); err != nil {
		return nil, err
	}
	return s.cfg.DB.StaleReport(ctx, opts)
}

// AuditState is what an auditor needs to trust the log: whether the hash
// chain checks out now, and the newest signed checkpoint.
type AuditState struct {
	Checked    int64 // events whose hashes and links checked out
	Broken     error // the first broken link, or nil
	Checkpoint *fieldpass.AuditCheckpoint
}

// AuditState verifies the whole chain (auditors and admins). It reads every
// event: on a log of millions, this is seconds.
func (s *Service) AuditState(ctx context.Context, c *fieldpass.Caller) (AuditState, error) {
	if err := s.Allow(c, OpAuditRead, "", fieldpass.RoleAuditor, fieldpass.RoleAdmin); err != nil {
		return AuditState{}, err
	}
	var st AuditState
	var err error
	st.Checked, err = s.cfg.DB.VerifyAudit(ctx)
	if err != nil {
		var broken *fieldpass.AuditChainError
		if !errors.As(err, &broken) {
			return AuditState{}, err
		}
		st.Broken = err
	}
	cps, err := s.cfg.DB.AuditCheckpoints(ctx, 0)
	if err != nil {
		return AuditState{}, err
	}
	if len(cps) > 0 {
		st.Checkpoint = &cps[len(cps)-1]
	}
	return st, nil
}

// WebRequests is the HTTP request log of one session through a device web
// UI, to its person or to an admin or auditor.
func (s *Service) WebRequests(ctx context.Context, c *fieldpass.Caller, sessionID string) ([]fieldpass.WebRequest, error) {
	if _, err := s.Session(ctx, c, sessionID); err != nil {
		return nil, err
	}
	return s.cfg.DB.WebRequests(ctx, sessionID, 0)
}
