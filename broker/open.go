package broker

// Open: authorising a connect, committing its row, and making the session
// live.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/tunnel"
)

// errAuditDown refuses new sessions while the store cannot commit their
// rows: no byte flows for a session that is not on the record.
var errAuditDown = fieldpass.Errorf(fieldpass.EUNAVAILABLE, "audit store unavailable: new sessions are refused")

// Open authorises user for service on device now, commits the session row,
// and returns the live session. Refusals open nothing:
//
//	forbidden    disabled user or device, no grant covering it, a revoked grant
//	expired      the grant that covered it has ended
//	not_found    no such device
//	unavailable  the device is offline, or the audit store does not answer
func (m *Sessions) Open(ctx context.Context, user *fieldpass.User, device, service, clientAddr string) (*Session, error) {
	s, err := m.open(ctx, user, device, service, clientAddr)
	if err != nil {
		m.cfg.Metrics.SessionDenied(fieldpass.ErrorCode(err))
		return nil, err
	}
	m.cfg.Metrics.SessionOpened()
	return s, nil
}

func (m *Sessions) open(ctx context.Context, user *fieldpass.User, device, service, clientAddr string) (*Session, error) {
	if user == nil {
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "no caller")
	}
	if user.Disabled {
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "user %s is disabled", user.Email)
	}
	if err := fieldpass.ValidateDeviceName(device); err != nil {
		return nil, err
	}
	if err := fieldpass.ValidateServiceName(service); err != nil {
		return nil, err
	}
	// While the store is known to be down, refuse at once rather than
	// make every caller wait out StoreTimeout; the check loop notices
	// within CheckInterval that it is back.
	m.mu.Lock()
	down := !m.downSince.IsZero()
	m.mu.Unlock()
	if down {
		return nil, errAuditDown
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	defer cancel()
	now := m.cfg.Now()
	g, err := m.db.ActiveGrantFor(ctx, user.Email, device, service, now)
	if err != nil {
		if m.storeErr(err) {
			return nil, errAuditDown
		}
		if fieldpass.ErrorCode(err) == fieldpass.EFORBIDDEN && strings.Contains(fieldpass.ErrorMessage(err), "no active grant") {
			return nil, m.whyNoGrant(ctx, user.Email, device, service, now)
		}
		return nil, err
	}
	if _, ys, _ := m.tunnelOf(device); ys == nil {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s is offline", device)
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "broker is shutting down")
	}
	gen := m.gen.Load()
	start := time.Now()
	rec, err := m.db.OpenSession(ctx, fieldpass.Session{
		User: user.Email, Device: device, Service: service, GrantID: g.ID,
		ClientAddr: clientAddr, BrokerID: m.brokerID,
	})
	m.cfg.Metrics.AuditWrite("open_session", start)
	if err != nil {
		if m.storeErr(err) {
			return nil, errAuditDown
		}
		return nil, err
	}
	m.storeOK()
	tid, err := tunnel.ParseID(rec.ID)
	if err != nil {
		return nil, fmt.Errorf("session id %s: %w", rec.ID, err)
	}
	// The device's tunnel now: the session lives no longer than it.
	var sensitive map[string]string // the device's sensitive labels
	d, ys, _ := m.tunnelOf(device)
	if d == nil || d.ID != rec.DeviceID {
		ys = nil
	} else {
		for k, v := range m.cfg.SensitiveLabels {
			if d.Labels[k] == v {
				if sensitive == nil {
					sensitive = map[string]string{}
				}
				sensitive[k] = v
			}
		}
	}
	s := &Session{
		m: m, rec: *rec, tid: tid, grantEnd: g.End, ys: ys,
		done:    make(chan struct{}),
		streams: map[*countedStream]struct{}{},
	}
	s.lastActive = now

	m.mu.Lock()
	m.live[s.rec.ID] = s
	m.cfg.Metrics.SessionsActive(len(m.live))
	m.mu.Unlock()
	s.mu.Lock()
	s.timer = time.AfterFunc(g.End.Sub(m.cfg.Now()), func() { m.end(s, fieldpass.EndGrantExpired, true) })
	s.mu.Unlock()
	if ys == nil {
		m.end(s, m.deviceGoneReason(rec.DeviceID, device), true)
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s went offline", device)
	}
	go m.watchDevice(s)
	// A revocation or a disabled user committed after our row (they wait
	// for it under the row locks OpenSession takes) may have been
	// announced before s was live: look again.
	if m.gen.Load() != gen {
		m.recheckGrant(ctx, g.ID)
		m.recheckUser(ctx, user.Email)
	}
	select {
	case <-s.done:
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "session ended at once: %s", s.Reason())
	default:
	}
	m.log.Info("session opened", "session", rec.ID, "user", rec.User, "device", device, "service", service, "grant", g.ID)
	if len(sensitive) > 0 {
		m.cfg.Alerts.Notify(alerts.Alert{Kind: alerts.SensitiveSessionStarted, At: now, Device: device, Details: map[string]any{
			"session": rec.ID, "user": rec.User, "service": service, "grant": g.ID,
			"client": clientAddr, "labels": sensitive,
		}})
	}
	return s, nil
}

// whyNoGrant explains a refusal for want of an active grant: expired,
// revoked, not started, or none at all.
func (m *Sessions) whyNoGrant(ctx context.Context, email, device, service string, now time.Time) error {
	none := fieldpass.Errorf(fieldpass.EFORBIDDEN, "no grant covers %s/%s for %s", device, service, email)
	gs, err := m.db.Grants(ctx, postgres.GrantFilter{Subject: email, Device: device, Limit: 100})
	if err != nil {
		return none
	}
	var last *fieldpass.Grant // of the grants for this service, the one ending last
	for _, g := range gs {
		if !slices.Contains(g.Services, service) {
			continue
		}
		if now.Before(g.Start) && !g.Revoked() {
			return fieldpass.Errorf(fieldpass.EFORBIDDEN, "your grant for %s/%s starts at %s", device, service, g.Start.Format(time.RFC3339))
		}
		if last == nil || g.End.After(last.End) {
			last = g
		}
	}
	switch {
	case last == nil:
		return none
	case last.Revoked():
		return fieldpass.Errorf(fieldpass.EFORBIDDEN, "your grant for %s/%s was revoked at %s", device, service, last.RevokedAt.Format(time.RFC3339))
	default:
		return fieldpass.Errorf(fieldpass.EEXPIRED, "your grant for %s/%s expired at %s", device, service, last.End.Format(time.RFC3339))
	}
}
