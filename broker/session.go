package broker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/metrics"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/tunnel"
)

// SessionsConfig configures Sessions. Zero values mean the defaults.
type SessionsConfig struct {
	// IdleTimeout ends a session that carried no byte either way for this
	// long (reason idle_timeout). Zero: off.
	IdleTimeout time.Duration
	// AuditGrace is how long live sessions go on while Postgres does not
	// answer (default 60 s). During it their ends are held in memory and
	// retried; past it they end with reason audit_unavailable, written once
	// Postgres is back.
	AuditGrace time.Duration
	// CheckInterval is how often live sessions are checked against their
	// rows (an admin's end), for idleness, and the store for health
	// (default 1 s). Grant expiry and revocation do not wait for it.
	CheckInterval time.Duration
	// StoreTimeout bounds each database call of Open and of recording an
	// end (default 5 s).
	StoreTimeout time.Duration
	// Metrics receives sessions opened, denied, ended and active, their
	// bytes, the latency of writing their records, and store errors
	// (default nil: none recorded).
	Metrics *metrics.Broker
	// Alerts receives sensitive_session_started (default nil: alerts off).
	Alerts *alerts.Notifier
	// SensitiveLabels marks devices whose sessions raise an alert: a
	// device carrying any of these key=value labels (default none).
	SensitiveLabels map[string]string
	Logger          *slog.Logger
	Now             func() time.Time
}

func (c *SessionsConfig) setDefaults() {
	if c.AuditGrace == 0 {
		c.AuditGrace = 60 * time.Second
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = time.Second
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// errAuditDown refuses new sessions while the store cannot commit their
// rows: no byte flows for a session that is not on the record.
var errAuditDown = fieldpass.Errorf(fieldpass.EUNAVAILABLE, "audit store unavailable: new sessions are refused")

// Sessions authorises, records and polices people's sessions to devices:
// the connect endpoint (apiserver) and the portal use it. README.md ("Sessions")
// gives the rules it enforces.
type Sessions struct {
	b   *Broker
	db  *postgres.DB
	cfg SessionsConfig
	log *slog.Logger

	// gen counts grant and user notifications, so that Open can tell
	// whether one arrived while it was committing a session.
	gen  atomic.Uint64
	kick chan struct{} // wakes the notification worker

	mu        sync.Mutex // guards the fields below and every Session's check fields
	live      map[string]*Session
	pending   map[string]*Session // ended here, end not yet written
	dirtyG    map[string]bool     // grants to re-read
	dirtyU    map[string]bool     // users to re-read
	reloadAll bool                // re-read every live session's grant and user
	downSince time.Time           // when the store stopped answering; zero while it answers
	closed    bool
}

// NewSessions returns the session manager of b. It first ends, with reason
// broker_restart, every session the store shows open on this broker: they
// died with its previous run.
func NewSessions(ctx context.Context, b *Broker, db *postgres.DB, cfg SessionsConfig) (*Sessions, error) {
	cfg.setDefaults()
	m := &Sessions{
		b: b, db: db, cfg: cfg, log: cfg.Logger,
		kick:    make(chan struct{}, 1),
		live:    map[string]*Session{},
		pending: map[string]*Session{},
		dirtyG:  map[string]bool{},
		dirtyU:  map[string]bool{},
	}
	start := time.Now()
	n, err := db.CloseOpenSessions(ctx, b.cfg.ID, fieldpass.EndBrokerRestart)
	cfg.Metrics.AuditWrite("close_open_sessions", start)
	if err != nil {
		cfg.Metrics.PostgresError()
		return nil, fmt.Errorf("close sessions left open: %w", err)
	}
	if n > 0 {
		m.log.Info("closed sessions left open by the previous run", "sessions", n)
	}
	return m, nil
}

// Run enforces grants on live sessions until ctx ends: it follows grant
// and user changes in Postgres, checks rows, idleness and the store every
// CheckInterval, and retries ends that could not be written. When ctx ends
// it ends every live session (broker_restart) and writes what it can.
func (m *Sessions) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(4)
	go func() {
		defer wg.Done()
		m.db.ListenGrants(ctx, func(id string) { m.notify(id, "") })
	}()
	go func() {
		defer wg.Done()
		m.db.ListenUsers(ctx, func(email string) { m.notify("", email) })
	}()
	go func() { defer wg.Done(); m.worker(ctx) }()
	go func() { defer wg.Done(); m.checkLoop(ctx) }()
	wg.Wait()
	m.shutdown()
	return nil
}

// shutdown ends every live session and tries once more to write the ends.
func (m *Sessions) shutdown() {
	m.mu.Lock()
	m.closed = true
	live := make([]*Session, 0, len(m.live))
	for _, s := range m.live {
		live = append(live, s)
	}
	m.mu.Unlock()
	for _, s := range live {
		m.end(s, fieldpass.EndBrokerRestart, false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StoreTimeout)
	defer cancel()
	m.flush(ctx)
	m.mu.Lock()
	n := len(m.pending)
	m.mu.Unlock()
	if n > 0 {
		// They are closed as broker_restart by the next start.
		m.log.Warn("session ends not recorded at shutdown", "sessions", n)
	}
}

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
	if !m.b.Connected(device) {
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
		ClientAddr: clientAddr, BrokerID: m.b.cfg.ID,
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
	s := &Session{
		m: m, rec: *rec, tid: tid, grantEnd: g.End,
		done:    make(chan struct{}),
		streams: map[*countedStream]struct{}{},
	}
	s.lastActive = now

	// The device's tunnel now: the session lives no longer than it.
	m.b.mu.Lock()
	var ysess *yamux.Session
	var sensitive map[string]string // the device's sensitive labels
	if p := m.b.byName[device]; p != nil && p.dev.ID == rec.DeviceID {
		ysess = p.sess
		for k, v := range m.cfg.SensitiveLabels {
			if p.dev.Labels[k] == v {
				if sensitive == nil {
					sensitive = map[string]string{}
				}
				sensitive[k] = v
			}
		}
	}
	m.b.mu.Unlock()

	m.mu.Lock()
	m.live[s.rec.ID] = s
	m.cfg.Metrics.SessionsActive(len(m.live))
	m.mu.Unlock()
	s.mu.Lock()
	s.timer = time.AfterFunc(g.End.Sub(m.cfg.Now()), func() { m.end(s, fieldpass.EndGrantExpired, true) })
	s.mu.Unlock()
	if ysess == nil {
		m.end(s, m.deviceGoneReason(rec.DeviceID), true)
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "device %s went offline", device)
	}
	go m.watchDevice(s, ysess)
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

// watchDevice ends s when the device's tunnel session closes: device_disabled
// if the broker dropped the device (disabled, decommissioned), else
// device_closed.
func (m *Sessions) watchDevice(s *Session, ysess *yamux.Session) {
	select {
	case <-s.done:
		return
	case <-ysess.CloseChan():
	}
	m.end(s, m.deviceGoneReason(s.rec.DeviceID), true)
}

// deviceGoneReason says why a device's tunnel went away. The broker removes
// a peer (before closing its session) only when the device left the active
// state, so a peer still present means the tunnel itself dropped.
func (m *Sessions) deviceGoneReason(deviceID string) fieldpass.EndReason {
	m.b.mu.Lock()
	p := m.b.byID[deviceID]
	m.b.mu.Unlock()
	if p != nil {
		return fieldpass.EndDeviceClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StoreTimeout)
	defer cancel()
	d, err := m.db.DeviceByID(ctx, deviceID)
	if err == nil && d.State == fieldpass.DeviceActive {
		return fieldpass.EndDeviceClosed
	}
	return fieldpass.EndDeviceDisabled
}

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

// end ends s with reason, once: later calls do nothing. It cuts s's
// streams at once; write queues the end for the store (it is retried until
// written).
func (m *Sessions) end(s *Session, reason fieldpass.EndReason, write bool) {
	if !s.claimEnd(reason, m.cfg.Now()) {
		return
	}
	m.mu.Lock()
	delete(m.live, s.rec.ID)
	m.pending[s.rec.ID] = s
	m.cfg.Metrics.SessionsActive(len(m.live))
	m.mu.Unlock()
	m.cfg.Metrics.SessionEnded(string(reason))
	s.stop()
	m.log.Info("session ended", "session", s.rec.ID, "user", s.rec.User, "device", s.rec.Device,
		"reason", reason, "bytes_in", s.in.Load(), "bytes_out", s.out.Load())
	if write {
		go m.write(s)
	}
}

// endRecorded ends s locally whose row another process ended already.
func (m *Sessions) endRecorded(s *Session, reason fieldpass.EndReason) {
	if !s.claimEnd(reason, m.cfg.Now()) {
		return
	}
	m.mu.Lock()
	delete(m.live, s.rec.ID)
	m.cfg.Metrics.SessionsActive(len(m.live))
	m.mu.Unlock()
	m.cfg.Metrics.SessionEnded(string(reason))
	s.stop()
	m.log.Info("session ended elsewhere", "session", s.rec.ID, "reason", reason)
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
	start := time.Now()
	_, err := m.db.EndSession(ctx, s.rec.ID, at, s.in.Load(), s.out.Load(), reason)
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

// Live returns the number of live sessions.
func (m *Sessions) Live() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.live)
}

// Pending returns the number of ended sessions whose end is not yet
// written.
func (m *Sessions) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

// EndSession ends the live session id carried by this broker with reason,
// and records it; it reports whether such a session was live here.
func (m *Sessions) EndSession(id string, reason fieldpass.EndReason) bool {
	if fieldpass.ValidateEndReason(reason) != nil {
		return false
	}
	m.mu.Lock()
	s := m.live[id]
	m.mu.Unlock()
	if s == nil {
		return false
	}
	m.end(s, reason, true)
	return true
}

// Session is one live, recorded session: a person's connection to one
// device's service within one grant, carrying any number of streams, each
// counted on it. The connect endpoint carries its streams.
type Session struct {
	m        *Sessions
	rec      fieldpass.Session
	tid      tunnel.ID
	grantEnd time.Time
	done     chan struct{}
	in, out  atomic.Int64 // bytes person->device, device->person

	mu      sync.Mutex // guards timer, reason, ended, streams
	reason  fieldpass.EndReason
	ended   time.Time
	timer   *time.Timer
	streams map[*countedStream]struct{}

	writeMu sync.Mutex // one write of the end at a time

	// guarded by m.mu; touched by check only
	lastTotal  int64
	lastActive time.Time
}

// ID is the session's id (its row's).
func (s *Session) ID() string { return s.rec.ID }

// Record is the session's row as opened, with the bytes so far.
func (s *Session) Record() fieldpass.Session {
	r := s.rec
	r.BytesIn, r.BytesOut = s.in.Load(), s.out.Load()
	s.mu.Lock()
	r.End, r.EndReason = s.ended, s.reason
	s.mu.Unlock()
	return r
}

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} { return s.done }

// Reason says why the session ended ("" while live).
func (s *Session) Reason() fieldpass.EndReason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// End ends the session from the person's side (client_closed, or reason),
// unless it has ended already.
func (s *Session) End(reason fieldpass.EndReason) {
	if reason == "" || fieldpass.ValidateEndReason(reason) != nil {
		reason = fieldpass.EndClientClosed
	}
	s.m.end(s, reason, true)
}

// Stream opens one connection to the session's service, counted on it.
func (s *Session) Stream(ctx context.Context) (tunnel.HalfCloser, error) {
	if r := s.Reason(); r != "" {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session has ended (%s)", r)
	}
	if !s.m.cfg.Now().Before(s.grantEnd) {
		s.m.end(s, fieldpass.EndGrantExpired, true)
		return nil, fieldpass.Errorf(fieldpass.EEXPIRED, "grant expired")
	}
	st, err := s.m.b.OpenStream(ctx, s.rec.Device, s.rec.Service, s.tid)
	if err != nil {
		return nil, err
	}
	cs := &countedStream{HalfCloser: st, s: s}
	s.mu.Lock()
	if s.reason != "" {
		r := s.reason
		s.mu.Unlock()
		cs.cut()
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "session has ended (%s)", r)
	}
	s.streams[cs] = struct{}{}
	s.mu.Unlock()
	return cs, nil
}

// claimEnd marks s ended with reason at at; it reports whether this call
// ended it. The caller then updates the books and calls stop.
func (s *Session) claimEnd(reason fieldpass.EndReason, at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reason != "" {
		return false
	}
	s.reason, s.ended = reason, at
	return true
}

// stop closes Done and cuts s's streams.
func (s *Session) stop() {
	s.mu.Lock()
	streams, timer := s.streams, s.timer
	s.streams = nil
	s.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	close(s.done)
	for cs := range streams {
		cs.cut()
	}
}

// countedStream counts a device stream's bytes on its session.
type countedStream struct {
	tunnel.HalfCloser
	s *Session
}

func (c *countedStream) Read(p []byte) (int, error) {
	n, err := c.HalfCloser.Read(p)
	c.s.out.Add(int64(n))
	c.s.m.cfg.Metrics.BytesOut(n)
	return n, err
}

func (c *countedStream) Write(p []byte) (int, error) {
	n, err := c.HalfCloser.Write(p)
	c.s.in.Add(int64(n))
	c.s.m.cfg.Metrics.BytesIn(n)
	return n, err
}

func (c *countedStream) Close() error {
	c.s.mu.Lock()
	delete(c.s.streams, c)
	c.s.mu.Unlock()
	return c.HalfCloser.Close()
}

// cut stops the stream both ways at once: a yamux Close alone is only a
// half-close, so expired deadlines fail the reads and writes in progress.
func (c *countedStream) cut() {
	if d, ok := c.HalfCloser.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Now())
	}
	c.HalfCloser.Close()
}
