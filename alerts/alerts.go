// Package alerts tells operators about fleet events they must act on (a
// device offline too long, a device roaming, an enrolment, a grant to a
// vendor, a session on a sensitive device, an access request waiting for
// an approver) by POSTing signed JSON to a webhook they run.
//
// Alerts exist because nobody watches the broker's log: the webhook is how
// an event reaches a chat channel or a pager. Delivery must never slow down
// or fail the path that raised the alert (a hello, an enrolment, a session
// open), so Notify only queues, in a bounded queue, and one goroutine
// delivers, retrying with capped exponential backoff and jitter. An alert
// that cannot be delivered (too many attempts, too old, or still queued at
// shutdown) is written as a dead letter, so that an operator can see what
// was missed; an alert dropped because the queue is full is logged and
// counted.
//
// Each request carries X-Fieldpass-Delivery (the alert's ID, the same on
// every retry, so receivers can drop duplicates) and X-Fieldpass-Signature:
// sha256=<hex HMAC-SHA256 of the body under the shared secret>.
//
// Several brokers sharing one fleet (and one database) would each tell of
// what they each saw: a device offline after flapping between them, the
// same device seen at every broker's start. An alert that names its
// Subject is claimed in the shared database first (Config.Claims): of the
// alerts of one kind about one subject within its claim window, only the
// first claimed is sent, whichever broker raised it.
//
// An operator can send dead letters again once the webhook is fixed
// (fieldpass-broker alerts replay): each replay keeps the alert's delivery
// id, is recorded beside its dead letter, and is audited (AuditReplay).
package alerts

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/metrics"
)

// Kind is what happened. It is the domain's AlertKind under the name this
// package's callers use, so that an Alert's kind and its dead letter's are
// one type.
type Kind = fieldpass.AlertKind

// The kinds of alert.
const (
	// DeviceOffline: a device that had a session here has been offline
	// longer than the broker's threshold; once per offline episode.
	DeviceOffline Kind = "device_offline"
	// EndpointChanged: a connected device's public endpoint changed
	// (roaming, or a NAT mapping renewed).
	EndpointChanged Kind = "endpoint_changed"
	// CloneSuspected: one device identity flaps between two endpoints.
	CloneSuspected Kind = "clone_suspected"
	// DeviceEnrolled: a device redeemed an enrolment token.
	DeviceEnrolled Kind = "device_enrolled"
	// VendorGrantCreated: a grant was created for a subject with no role
	// (an outside vendor).
	VendorGrantCreated Kind = "vendor_grant_created"
	// SensitiveSessionStarted: a session opened to a device carrying a
	// label configured as sensitive.
	SensitiveSessionStarted Kind = "sensitive_session_started"
	// AccessRequested: a person filed an access request; approvers act on
	// it without polling the queue.
	AccessRequested Kind = "access_requested"
	// AccessRequestDecided: an approver approved or denied a request.
	AccessRequestDecided Kind = "access_request_decided"
)

// Alert is one event, the JSON body of a delivery.
type Alert struct {
	ID      string         `json:"id"`
	Kind    Kind           `json:"kind"`
	At      time.Time      `json:"at"`
	Device  string         `json:"device,omitempty"`
	Details map[string]any `json:"details,omitempty"`
	// Subject, when set, is what the alert is about for the fleet (a
	// device's id): with Config.Claims, it is sent only if no other alert
	// of its kind about the same subject was sent within the kind's
	// claim window, by any broker. Not part of the body.
	Subject string `json:"-"`
}

// Claims de-duplicates alerts across the brokers of a fleet
// (postgres.DB): ClaimAlert reports true to exactly one of the callers
// claiming kind and subject within window, and records the winner's
// delivery id.
type Claims interface {
	ClaimAlert(ctx context.Context, kind Kind, subject, alertID string, window time.Duration) (bool, error)
}

// ClaimWindow is how long, after an alert about a subject was sent, other
// alerts of its kind about it are taken as the same event and dropped
// (Config.Claims). A device that flaps between brokers, or goes offline
// again soon after it came back, is told of once an hour; a roaming
// device once a minute; a suspected clone once per the broker's clone
// window.
func ClaimWindow(k Kind) time.Duration {
	switch k {
	case EndpointChanged:
		return time.Minute
	case CloneSuspected:
		return 10 * time.Minute
	}
	return time.Hour
}

// DeadLetterStore keeps dead letters (postgres.DB).
type DeadLetterStore interface {
	RecordAlertDeadLetter(ctx context.Context, d fieldpass.DeadLetter) error
}

// Config configures a Notifier. Zero values mean the defaults.
type Config struct {
	// URL receives the POSTs: https, or http to a loopback address only
	// (a receiver on the same host).
	URL string
	// Secret keys the HMAC signature; at least 16 bytes.
	Secret []byte
	// QueueSize bounds the alerts waiting for delivery, new and retrying
	// together (default 1024). Beyond it new alerts are dropped.
	QueueSize int
	// Timeout bounds one delivery attempt (default 10 s).
	Timeout time.Duration
	// MinBackoff is the wait before the first retry (default 1 s); each
	// further retry waits twice as long, up to MaxBackoff (default 5 min),
	// each wait drawn between half and all of it so that retries of many
	// alerts spread out.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxAttempts gives up on an alert after this many attempts (default
	// 20), MaxAge once it is this old (default 24 h), whichever is first.
	MaxAttempts int
	MaxAge      time.Duration
	// DeadLetters records the alerts given up on (default nil: they are
	// only logged).
	DeadLetters DeadLetterStore
	// Claims, with several brokers, de-duplicates the alerts that name a
	// Subject across the fleet: the first broker to claim one sends it
	// (default nil: every alert is sent). A claim the database does not
	// answer sends the alert anyway: a duplicate is cheaper than a
	// silence.
	Claims Claims
	// Metrics counts alerts delivered, dropped and dead-lettered
	// (default nil: only the Notifier's own counters).
	Metrics *metrics.Broker
	// Client sends the requests (default: a client with no redirects
	// followed, since a redirect would send the signed body elsewhere).
	Client *http.Client
	Logger *slog.Logger
	Now    func() time.Time
	// Rand is the source of delivery IDs (default crypto/rand).
	Rand io.Reader
}

// CheckURL reports whether u may receive alerts: https, or http to a
// loopback address (the body is signed, not encrypted).
func CheckURL(u string) error {
	// Messages name only scheme and host: a webhook's path often holds a
	// token of the receiving service.
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return errors.New("alert webhook: want an absolute https URL")
	}
	switch {
	case p.Scheme == "https":
		return nil
	case p.Scheme == "http" && fieldpass.IsLoopbackHost(p.Hostname()):
		return nil
	case p.Scheme == "http":
		return fmt.Errorf("alert webhook http://%s: http is allowed only to a loopback address; use https", p.Host)
	}
	return fmt.Errorf("alert webhook %s://%s: want an https URL", p.Scheme, p.Host)
}

// Redact returns u with only its scheme and host: what may be logged of a
// webhook URL, whose path or query may hold a token.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(invalid URL)"
	}
	return p.Scheme + "://" + p.Host + "/..."
}

func (c *Config) setDefaults() error {
	if err := CheckURL(c.URL); err != nil {
		return err
	}
	if len(c.Secret) < 16 {
		return errors.New("alert secret: want at least 16 bytes")
	}
	if c.QueueSize == 0 {
		c.QueueSize = 1024
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Minute
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 20
	}
	if c.MaxAge == 0 {
		c.MaxAge = 24 * time.Hour
	}
	if c.Client == nil {
		c.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	return nil
}

// delivery is an alert on its way: its body is fixed when it is queued.
type delivery struct {
	id        string
	kind      Kind
	subject   string // Alert.Subject; "" for none
	claimed   bool   // the fleet's claim was made (or could not be)
	body      []byte
	createdAt time.Time
	attempts  int
	lastErr   string
	next      time.Time // when to try again
}

// Notifier queues and delivers alerts. A nil *Notifier is valid and
// discards every alert: alerts are off.
type Notifier struct {
	cfg Config
	log *slog.Logger

	kick chan struct{}

	mu     sync.Mutex // guards queue and closed
	queue  []*delivery
	closed bool

	dropped   atomic.Uint64
	delivered atomic.Uint64
	dead      atomic.Uint64
	dup       atomic.Uint64
}

// New returns a Notifier; Run delivers what it queues.
func New(cfg Config) (*Notifier, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Notifier{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1)}, nil
}

// Notify queues a for delivery and returns at once: it never blocks on the
// webhook. It fills in a's ID and At when they are empty. When the queue is
// full a is dropped, logged and counted.
func (n *Notifier) Notify(a Alert) {
	if n == nil {
		return
	}
	if a.ID == "" {
		var b [16]byte
		if _, err := io.ReadFull(n.cfg.Rand, b[:]); err != nil {
			n.log.Warn("alert dropped: no delivery id", "kind", a.Kind, "err", err)
			n.drop()
			return
		}
		a.ID = hex.EncodeToString(b[:])
	}
	if a.At.IsZero() {
		a.At = n.cfg.Now()
	}
	a.At = a.At.UTC()
	body, err := json.Marshal(a)
	if err != nil {
		n.log.Warn("alert dropped: cannot encode", "kind", a.Kind, "id", a.ID, "err", err)
		n.drop()
		return
	}
	d := &delivery{id: a.ID, kind: a.Kind, subject: a.Subject, body: body, createdAt: n.cfg.Now()}
	n.mu.Lock()
	if n.closed || len(n.queue) >= n.cfg.QueueSize {
		closed := n.closed
		n.mu.Unlock()
		n.drop()
		n.log.Warn("alert dropped: queue full or notifier stopped", "kind", a.Kind, "id", a.ID, "device", a.Device, "stopped", closed)
		return
	}
	n.queue = append(n.queue, d)
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *Notifier) drop() {
	n.dropped.Add(1)
	n.cfg.Metrics.Alert("dropped")
}

// Dropped counts the alerts dropped because the queue was full.
func (n *Notifier) Dropped() uint64 { return n.dropped.Load() }

// Delivered counts the alerts the webhook accepted.
func (n *Notifier) Delivered() uint64 { return n.delivered.Load() }

// DeadLettered counts the alerts given up on.
func (n *Notifier) DeadLettered() uint64 { return n.dead.Load() }

// Duplicates counts the alerts not sent because another broker of the
// fleet had claimed the same event (Config.Claims).
func (n *Notifier) Duplicates() uint64 { return n.dup.Load() }

// Sign returns the X-Fieldpass-Signature value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether sig is body's signature under secret, in constant
// time: what a receiver does.
func Verify(secret, body []byte, sig string) bool {
	return hmac.Equal([]byte(sig), []byte(Sign(secret, body)))
}

// shutdownBound is how long Run spends writing dead letters for the alerts
// still queued when its context ends.
const shutdownBound = 5 * time.Second

// Run delivers queued alerts until ctx ends, one at a time in the order they
// fall due. Then it records every alert still queued as a dead letter
// (within a few seconds) and returns nil.
func (n *Notifier) Run(ctx context.Context) error {
	if n == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		d, wait := n.due()
		if d != nil {
			n.attempt(ctx, d)
			continue
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			n.shutdown()
			return nil
		case <-n.kick:
		case <-t.C:
		}
	}
}

// due takes the first delivery whose time has come off the queue, or
// reports how long until the next one is due.
func (n *Notifier) due() (*delivery, time.Duration) {
	now := n.cfg.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	wait := time.Hour
	for i, d := range n.queue {
		if !d.next.After(now) {
			n.queue = append(n.queue[:i], n.queue[i+1:]...)
			return d, 0
		}
		wait = min(wait, d.next.Sub(now))
	}
	return nil, wait
}

// attempt tries d once, then requeues it for a retry or gives it up.
// Before its first try, an alert with a subject is claimed for the fleet;
// one another broker claimed is dropped as a duplicate.
func (n *Notifier) attempt(ctx context.Context, d *delivery) {
	if !d.claimed && d.subject != "" && n.cfg.Claims != nil {
		send, retry := n.claim(ctx, d)
		if retry {
			n.requeue(d)
			return
		}
		if !send {
			n.dup.Add(1)
			n.cfg.Metrics.Alert("duplicate")
			n.log.Debug("alert not sent: another broker of the fleet sent it", "kind", d.kind, "id", d.id, "subject", d.subject)
			return
		}
	}
	d.attempts++
	err := n.send(ctx, d)
	if err == nil {
		n.delivered.Add(1)
		n.cfg.Metrics.Alert("delivered")
		n.log.Debug("alert delivered", "kind", d.kind, "id", d.id, "attempts", d.attempts)
		return
	}
	if ctx.Err() != nil {
		// Stopping: the attempt was cut short, not refused.
		d.attempts--
	} else {
		d.lastErr = err.Error()
	}
	now := n.cfg.Now()
	if d.attempts >= n.cfg.MaxAttempts || now.Sub(d.createdAt) >= n.cfg.MaxAge {
		n.giveUp(d)
		return
	}
	d.next = now.Add(n.backoff(d.attempts))
	n.log.Info("alert delivery failed; will retry", "kind", d.kind, "id", d.id, "attempts", d.attempts, "retry_at", d.next, "err", err)
	n.requeue(d)
}

func (n *Notifier) requeue(d *delivery) {
	n.mu.Lock()
	n.queue = append(n.queue, d)
	n.mu.Unlock()
}

// claim claims d for this broker in the fleet: send is false when another
// broker claimed the same event within its window. A claim the database
// does not answer sends the alert (a duplicate is cheaper than a silence);
// one cut short by shutdown is retried (and so dead-lettered, unsent).
func (n *Notifier) claim(ctx context.Context, d *delivery) (send, retry bool) {
	cctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	ok, err := n.cfg.Claims.ClaimAlert(cctx, d.kind, d.subject, d.id, ClaimWindow(d.kind))
	if err != nil {
		if ctx.Err() != nil {
			return false, true
		}
		n.log.Warn("alert sent without the fleet's de-duplication: the claim failed", "kind", d.kind, "id", d.id, "err", err)
		ok = true
	}
	d.claimed = true
	return ok, false
}

// Deliver makes one attempt to deliver body, an alert already encoded,
// under its delivery id, with the headers and signature of Run's
// deliveries: it is how a dead letter is replayed, so receivers that drop
// duplicates by X-Fieldpass-Delivery drop a replay of an alert they did
// get. It neither queues, retries, counts nor records a dead letter; Run
// need not be running.
func (n *Notifier) Deliver(ctx context.Context, id string, body []byte) error {
	if n == nil {
		return errors.New("alerts are off")
	}
	return n.send(ctx, &delivery{id: id, body: body})
}

// backoff is the wait after the attempts'th failed attempt: MinBackoff
// doubled per attempt, capped at MaxBackoff, drawn from [w/2, w].
func (n *Notifier) backoff(attempts int) time.Duration {
	w := n.cfg.MinBackoff
	for i := 1; i < attempts && w < n.cfg.MaxBackoff; i++ {
		w *= 2
	}
	w = min(w, n.cfg.MaxBackoff)
	half := w / 2
	return half + time.Duration(mrand.Int64N(int64(w-half)+1))
}

func (n *Notifier) send(ctx context.Context, d *delivery) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.URL, bytes.NewReader(d.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "fieldpass-broker")
	req.Header.Set("X-Fieldpass-Delivery", d.id)
	req.Header.Set("X-Fieldpass-Signature", Sign(n.cfg.Secret, d.body))
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		// Webhook URLs often carry a token in their path (chat services):
		// keep it out of logs and dead letters.
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("%s %s: %w", ue.Op, Redact(n.cfg.URL), ue.Err)
		}
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// giveUp records d as a dead letter.
func (n *Notifier) giveUp(d *delivery) {
	n.dead.Add(1)
	n.cfg.Metrics.Alert("dead_lettered")
	n.log.Warn("alert given up; recorded as a dead letter", "kind", d.kind, "id", d.id, "attempts", d.attempts, "err", d.lastErr)
	if n.cfg.DeadLetters == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownBound)
	defer cancel()
	err := n.cfg.DeadLetters.RecordAlertDeadLetter(ctx, fieldpass.DeadLetter{
		ID: d.id, Kind: d.kind, Payload: d.body, Attempts: d.attempts,
		LastError: d.lastErr, CreatedAt: d.createdAt, FailedAt: n.cfg.Now(),
	})
	if err != nil {
		n.log.Warn("alert dead letter not recorded", "kind", d.kind, "id", d.id, "err", err)
	}
}

// shutdown stops new alerts and records those still queued as dead letters
// (never attempted ones too: nobody was told), within shutdownBound.
func (n *Notifier) shutdown() {
	n.mu.Lock()
	n.closed = true
	q := n.queue
	n.queue = nil
	n.mu.Unlock()
	deadline := time.Now().Add(shutdownBound)
	for i, d := range q {
		if time.Now().After(deadline) {
			n.log.Warn("alerts lost at shutdown: dead letters not recorded in time", "alerts", len(q)-i)
			return
		}
		if d.lastErr == "" {
			d.lastErr = "broker shut down before delivery"
		} else {
			d.lastErr = strings.TrimSpace(d.lastErr) + " (broker shut down before the next retry)"
		}
		n.giveUp(d)
	}
}
