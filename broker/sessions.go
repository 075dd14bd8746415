package broker

// The session manager: its configuration, its books (live sessions, ends
// not yet written) and its lifecycle. What it does lives beside it:
//
//	open.go     Open, the one decision point for a connect
//	enforce.go  ending live sessions when their grant, user or device
//	            no longer lets them go on (notifications, the check loop)
//	grace.go    the store's health: ends held and retried while Postgres
//	            is down, and the AuditGrace past which everything ends
//	reconnect.go  a session across its device's reconnects: streams in
//	            flight end, the session waits ReconnectWait for the device
//	session.go  one live session and the byte counting of its streams

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/brokerlink"
	"github.com/fieldpass/fieldpass/metrics"
	"github.com/fieldpass/fieldpass/postgres"
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
	// BytesInterval is how often the byte counts of live sessions are
	// written to their rows, so that open sessions show what they carried
	// so far (default 5 s; the end writes the final counts).
	BytesInterval time.Duration
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
	// MFALabels marks devices that need a multi-factor login: connecting
	// to a device carrying any of these key=value labels is refused
	// (mfa_required) unless the caller's login asserted MFA (Caller.MFA),
	// even when the identity provider's policy does not require it for
	// everyone (default none).
	MFALabels map[string]string
	// DenialWindow is the window in which identical refused attempts are
	// recorded as one audit event with a count (default 1 min; denied.go).
	DenialWindow time.Duration
	// DenialLimit is the most distinct refused attempts recorded one by
	// one in a window; more are counted in one event (default 100).
	DenialLimit int
	// ReconnectWait is how long a session waits for its device when the
	// device's tunnel drops (roaming, a NAT rebinding, a connector
	// restart): the streams in flight end, the session stays open, new
	// streams wait for the device (up to the stream-open deadline), and
	// only a device not back within this ends it device_closed (default
	// 2 min: longer than a connector's reconnect after a lost link, short
	// enough that a person is not left waiting on a device that is gone).
	// Negative: a session ends when its device's tunnel drops.
	ReconnectWait time.Duration
	// AdmitWait, with a fleet, is how long a connect waits for a device
	// whose lease this broker took at its hello while its tunnel is set
	// up, before it is refused as offline (default 1 s; open.go).
	AdmitWait time.Duration
	Logger    *slog.Logger
	Now       func() time.Time
}

func (c *SessionsConfig) setDefaults() {
	if c.AuditGrace == 0 {
		c.AuditGrace = 60 * time.Second
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = time.Second
	}
	if c.BytesInterval == 0 {
		c.BytesInterval = 5 * time.Second
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 5 * time.Second
	}
	if c.DenialWindow == 0 {
		c.DenialWindow = time.Minute
	}
	if c.DenialLimit == 0 {
		c.DenialLimit = 100
	}
	if c.ReconnectWait == 0 {
		c.ReconnectWait = 2 * time.Minute
	}
	if c.AdmitWait <= 0 {
		c.AdmitWait = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Sessions authorises, records and polices people's sessions to devices:
// the connect endpoint (apiserver) and the portal use it. README.md ("Sessions")
// gives the rules it enforces.
type Sessions struct {
	// tunnelOf, tunnelByID and brokerID are all the manager knows of its
	// broker: the device by name as the broker holds it, with its live
	// tunnel (Broker.tunnelOf), the live tunnel of a device by id, which
	// a session follows across reconnects (Broker.tunnelByID), and the
	// broker's id for the session rows.
	tunnelOf   func(name string) (dev *fieldpass.Device, ys *yamux.Session, ok bool)
	tunnelByID func(id string) (ys *yamux.Session, ok bool)
	// linkToHolder, with a fleet, is the link to the broker of the fleet
	// holding device id, when another holds it (fleet.go); nil alone.
	linkToHolder func(ctx context.Context, deviceID string) (*brokerlink.Link, string, bool)
	// linkToBroker, with a fleet, is the link to the broker of the fleet
	// with that id (fleet_end.go); alone it always fails.
	linkToBroker func(ctx context.Context, brokerID string) (*brokerlink.Link, error)
	// leaseHeld, with a fleet, reports whether this broker holds device
	// id's lease (Broker.leaseHeld); alone it is always false.
	leaseHeld func(deviceID string) bool
	brokerID  string
	db        *postgres.DB
	cfg       SessionsConfig
	log       *slog.Logger

	// gen counts grant and user notifications, so that Open can tell
	// whether one arrived while it was committing a session.
	gen  atomic.Uint64
	kick chan struct{} // wakes the notification worker

	tokens *tokenBook // the live sessions of each token (tokens.go)

	mu        sync.Mutex // guards the fields below and every Session's check fields
	live      map[string]*Session
	pending   map[string]*Session // ended here, end not yet written
	dirtyG    map[string]bool     // grants to re-read
	dirtyU    map[string]bool     // users to re-read
	reloadAll bool                // re-read every live session's grant and user
	downSince time.Time           // when the store stopped answering; zero while it answers
	closed    bool
	bytesAt   time.Time // when live byte counts were last written

	denials     *denialLog     // refused attempts, coalesced into the audit
	denialWG    sync.WaitGroup // their writes in flight
	denialsDone bool           // guarded by mu: shutdown waits for the writes; no new ones
}

// NewSessions returns the session manager of b. It first ends, with reason
// broker_restart, every session the store shows open on this broker: they
// died with its previous run.
func NewSessions(ctx context.Context, b *Broker, db *postgres.DB, cfg SessionsConfig) (*Sessions, error) {
	cfg.setDefaults()
	m := &Sessions{
		tunnelOf: b.tunnelOf, tunnelByID: b.tunnelByID, linkToHolder: b.linkToHolder, linkToBroker: b.linkToBroker, leaseHeld: b.leaseHeld, brokerID: b.ID(), db: db, cfg: cfg, log: cfg.Logger,
		kick:    make(chan struct{}, 1),
		live:    map[string]*Session{},
		pending: map[string]*Session{},
		dirtyG:  map[string]bool{},
		dirtyU:  map[string]bool{},
		tokens:  newTokenBook(),
	}
	m.denials = &denialLog{window: cfg.DenialWindow, limit: cfg.DenialLimit, write: m.writeDenial,
		actor: postgres.BrokerActor(m.brokerID)}
	start := time.Now()
	n, err := db.CloseOpenSessions(ctx, m.brokerID, fieldpass.EndBrokerRestart)
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
	wg.Add(5)
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
	go func() { defer wg.Done(); m.followTokens(ctx) }()
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
	m.denials.flush()
	m.mu.Lock()
	m.denialsDone = true
	m.mu.Unlock()
	m.denialWG.Wait()
	m.mu.Lock()
	n := len(m.pending)
	m.mu.Unlock()
	if n > 0 {
		// They are closed as broker_restart by the next start.
		m.log.Warn("session ends not recorded at shutdown", "sessions", n)
	}
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
