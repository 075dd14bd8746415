package broker

// Open: the one decision point for a connect. Every rule that lets a person
// reach a device (their user, a grant, the device's state, the device's MFA
// label policy, its tunnel) is applied in decide, on one read of the device,
// and every refusal carries a fieldpass.DenyReason.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/tunnel"
)

// errAuditDown refuses new sessions while the store cannot commit their
// rows: no byte flows for a session that is not on the record.
var errAuditDown = fieldpass.Deny(fieldpass.DenyAuditUnavailable,
	fieldpass.Errorf(fieldpass.EUNAVAILABLE, "audit store unavailable: new sessions are refused"))

// Open authorises caller for service on device now, commits the session
// row, and returns the live session. Refusals open nothing, and each
// carries its reason (fieldpass.DenyReasonOf; the metrics count by it):
//
//	invalid      malformed names (invalid)
//	forbidden    no caller (unauthenticated), disabled user or device
//	             (user_disabled, device_disabled), a device whose labels
//	             need a multi-factor login the caller's lacks
//	             (mfa_required), no grant covering it (no_grant,
//	             grant_not_started), a revoked grant (grant_revoked)
//	expired      the grant that covered it has ended (grant_expired)
//	not_found    no such device (device_unknown)
//	unavailable  the device is offline (device_offline), the audit store
//	             does not answer (audit_unavailable), the broker is
//	             stopping (broker_stopping)
//
// Anything else is refused as internal.
func (m *Sessions) Open(ctx context.Context, caller *fieldpass.Caller, device, service, clientAddr string) (*Session, error) {
	s, err := m.open(ctx, caller, device, service, clientAddr)
	if fieldpass.DenyReasonOf(err) == fieldpass.DenyDeviceOffline {
		// Offline here may be held by another broker of the fleet.
		if rs, rerr, ok := m.openAtHolder(ctx, caller, device, service, clientAddr); ok {
			s, err = rs, rerr
		}
	}
	if err != nil {
		if fieldpass.DenyReasonOf(err) == "" {
			err = fieldpass.Deny(fieldpass.DenyInternal, err)
		}
		m.cfg.Metrics.SessionDenied(string(fieldpass.DenyReasonOf(err)))
		m.Denied(Denial{User: callerEmail(caller), Device: device, Service: service,
			Reason: fieldpass.DenyReasonOf(err), Client: clientAddr, Message: fieldpass.ErrorMessage(err)})
		return nil, err
	}
	m.cfg.Metrics.SessionOpened()
	return s, nil
}

// admission is what decide found: the grant that covers the connect and the
// device as read for it.
type admission struct {
	grant *fieldpass.Grant
	dev   *fieldpass.Device
}

// decide applies every rule of a connect, in this order; the first that
// fails is the refusal:
//
//  1. a caller whose user (as the token check read it) is not disabled,
//     and whose token has not expired or been revoked;
//  2. well-formed device and service names;
//  3. the store answers (known down: refused at once);
//  4. the device exists: read once, here; every rule below sees this read;
//  5. the MFA label policy (MFALabels) against caller.MFA;
//  6. in the store: the device is active, the user is not disabled now,
//     and a grant covers device and service now (a missing one is
//     explained: expired, revoked, not started);
//  7. the device has a live tunnel here.
func (m *Sessions) decide(ctx context.Context, caller *fieldpass.Caller, device, service string, now time.Time) (*admission, error) {
	if caller == nil || caller.User == nil {
		return nil, fieldpass.Deny(fieldpass.DenyUnauthenticated, fieldpass.Errorf(fieldpass.EFORBIDDEN, "no caller"))
	}
	user := caller.User
	if user.Disabled {
		return nil, fieldpass.Deny(fieldpass.DenyUserDisabled, fieldpass.Errorf(fieldpass.EFORBIDDEN, "user %s is disabled", user.Email))
	}
	if err := checkToken(caller.Token, now); err != nil {
		return nil, err
	}
	if err := fieldpass.ValidateDeviceName(device); err != nil {
		return nil, fieldpass.Deny(fieldpass.DenyInvalid, err)
	}
	if err := fieldpass.ValidateServiceName(service); err != nil {
		return nil, fieldpass.Deny(fieldpass.DenyInvalid, err)
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

	dev, err := m.db.Device(ctx, device)
	if err != nil {
		if m.storeErr(err) {
			return nil, errAuditDown
		}
		if fieldpass.ErrorCode(err) == fieldpass.ENOTFOUND {
			return nil, fieldpass.Deny(fieldpass.DenyDeviceUnknown, err)
		}
		return nil, err
	}
	if k, v, ok := m.mfaLabel(dev); ok && !caller.MFA {
		return nil, fieldpass.Deny(fieldpass.DenyMFARequired, fieldpass.Errorf(fieldpass.EFORBIDDEN,
			"device %s (label %s=%s) needs a multi-factor login: log in again with MFA (the IdP must assert it in the amr or acr claim)", device, k, v))
	}
	g, err := m.db.ActiveGrantOn(ctx, user.Email, dev, service, now)
	if err != nil {
		if m.storeErr(err) {
			return nil, errAuditDown
		}
		if fieldpass.DenyReasonOf(err) == fieldpass.DenyNoGrant {
			return nil, m.whyNoGrant(ctx, user.Email, device, service, now)
		}
		return nil, err
	}
	// The broker's peer of that name must be the device just read (not
	// one renamed since) and connected.
	if !m.connected(ctx, device, dev.ID) {
		return nil, fieldpass.Deny(fieldpass.DenyDeviceOffline, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s is offline", device))
	}
	return &admission{grant: g, dev: dev}, nil
}

// connected reports whether the device named device, with id id, has its
// tunnel here. With a fleet, a device whose lease this broker holds said
// hello here a moment ago (the lease is taken before the hello is
// answered): its tunnel is waited for, up to SessionsConfig.AdmitWait,
// rather than the person told "offline" by the broker that holds it.
func (m *Sessions) connected(ctx context.Context, device, id string) bool {
	var tick *time.Ticker
	deadline := time.Now().Add(m.cfg.AdmitWait)
	for {
		if d, ys, _ := m.tunnelOf(device); ys != nil && d.ID == id {
			return true
		}
		if m.leaseHeld == nil || !m.leaseHeld(id) || time.Now().After(deadline) {
			return false
		}
		if tick == nil {
			tick = time.NewTicker(tunnelPoll / 2)
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// mfaLabel returns the first (by key) of dev's labels that MFALabels marks
// as needing a multi-factor login; ok is false when there is none.
func (m *Sessions) mfaLabel(dev *fieldpass.Device) (k, v string, ok bool) {
	for _, k := range slices.Sorted(maps.Keys(m.cfg.MFALabels)) {
		if v := m.cfg.MFALabels[k]; dev.Labels[k] == v {
			return k, v, true
		}
	}
	return "", "", false
}

// open decides, commits the session row, and makes the session live.
func (m *Sessions) open(ctx context.Context, caller *fieldpass.Caller, device, service, clientAddr string) (*Session, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	defer cancel()
	now := m.cfg.Now()
	a, err := m.decide(ctx, caller, device, service, now)
	if err != nil {
		return nil, err
	}
	g, user := a.grant, caller.User
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, fieldpass.Deny(fieldpass.DenyBrokerStopping, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "broker is shutting down"))
	}
	gen, tgen := m.gen.Load(), m.tokens.gen.Load()
	var tokenID string
	if caller.Token != nil {
		tokenID = caller.Token.ID
	}
	start := time.Now()
	rec, err := m.db.OpenSession(ctx, fieldpass.Session{
		User: user.Email, Device: device, Service: service, GrantID: g.ID,
		ClientAddr: clientAddr, BrokerID: m.brokerID, TokenID: tokenID, ServedBy: caller.ServedBy,
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

	// The device's tunnel now, which watchDevice follows from here on
	// (by the device's id, not its name).
	ys, _ := m.tunnelByID(rec.DeviceID)
	if ys != nil && ys.IsClosed() {
		ys = nil
	}
	s := &Session{
		m: m, rec: *rec, tid: tid, grantEnd: g.End,
		done:    make(chan struct{}),
		streams: map[*countedStream]struct{}{},
	}
	s.lastActive = now
	var sensitive map[string]string // the device's sensitive labels
	for k, v := range m.cfg.SensitiveLabels {
		if a.dev.Labels[k] == v {
			if sensitive == nil {
				sensitive = map[string]string{}
			}
			sensitive[k] = v
		}
	}

	m.mu.Lock()
	m.live[s.rec.ID] = s
	m.cfg.Metrics.SessionsActive(len(m.live))
	m.mu.Unlock()
	s.mu.Lock()
	s.timer = time.AfterFunc(g.End.Sub(m.cfg.Now()), func() { m.end(s, fieldpass.EndGrantExpired, true) })
	s.mu.Unlock()
	if ys == nil {
		m.end(s, m.deviceGoneReason(rec.DeviceID), true)
		return nil, fieldpass.Deny(fieldpass.DenyDeviceOffline, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s went offline", device))
	}
	go m.watchDevice(s, ys)
	m.bindToken(ctx, s, caller.Token, tgen)
	// A revocation or a disabled user committed after our row (they wait
	// for it under the row locks OpenSession takes) may have been
	// announced before s was live: look again.
	if m.gen.Load() != gen {
		m.recheckGrant(ctx, g.ID)
		m.recheckUser(ctx, user.Email)
	}
	select {
	case <-s.done:
		r := s.Reason()
		return nil, fieldpass.Deny(denyForEnd(r), fieldpass.Errorf(fieldpass.EFORBIDDEN, "session ended at once: %s", r))
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
	none := fieldpass.Deny(fieldpass.DenyNoGrant, fieldpass.Errorf(fieldpass.EFORBIDDEN, "no grant covers %s/%s for %s", device, service, email))
	gs, err := m.db.Grants(ctx, fieldpass.GrantFilter{Subject: email, Device: device, Limit: 100})
	if err != nil {
		return none
	}
	var last *fieldpass.Grant // of the grants for this service, the one ending last
	for _, g := range gs {
		if !slices.Contains(g.Services, service) {
			continue
		}
		if now.Before(g.Start) && !g.Revoked() {
			return fieldpass.Deny(fieldpass.DenyGrantNotStarted, fieldpass.Errorf(fieldpass.EFORBIDDEN,
				"your grant for %s/%s starts at %s", device, service, g.Start.Format(time.RFC3339)))
		}
		if last == nil || g.End.After(last.End) {
			last = g
		}
	}
	switch {
	case last == nil:
		return none
	case last.Revoked():
		return fieldpass.Deny(fieldpass.DenyGrantRevoked, fieldpass.Errorf(fieldpass.EFORBIDDEN,
			"your grant for %s/%s was revoked at %s", device, service, last.RevokedAt.Format(time.RFC3339)))
	default:
		return fieldpass.Deny(fieldpass.DenyGrantExpired, fieldpass.Errorf(fieldpass.EEXPIRED,
			"your grant for %s/%s expired at %s", device, service, last.End.Format(time.RFC3339)))
	}
}

// denyForEnd is the refusal reason of a session that ended while Open was
// making it live (a revocation racing the commit, say).
func denyForEnd(r fieldpass.EndReason) fieldpass.DenyReason {
	switch r {
	case fieldpass.EndGrantExpired:
		return fieldpass.DenyGrantExpired
	case fieldpass.EndGrantRevoked:
		return fieldpass.DenyGrantRevoked
	case fieldpass.EndUserDisabled:
		return fieldpass.DenyUserDisabled
	case fieldpass.EndDeviceDisabled:
		return fieldpass.DenyDeviceDisabled
	case fieldpass.EndDeviceClosed:
		return fieldpass.DenyDeviceOffline
	case fieldpass.EndAuditUnavailable:
		return fieldpass.DenyAuditUnavailable
	case fieldpass.EndBrokerRestart:
		return fieldpass.DenyBrokerStopping
	case fieldpass.EndTokenRevoked, fieldpass.EndTokenExpired, fieldpass.EndLoggedOut:
		return fieldpass.DenyUnauthenticated
	default:
		return fieldpass.DenyInternal
	}
}
