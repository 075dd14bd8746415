package broker

// The record of refused attempts. Auditors must see every refused connect
// (who, what, why, from where), but a refusal costs the caller nothing, so
// writing one audit event per refusal would let anyone with a token grow
// the hash chain without bound. Identical refusals (same person, device,
// service, reason and client address) are therefore coalesced per window:
// the first is written at once, the repeats as one event with their count
// when the window closes; and a window takes at most DenialLimit distinct
// refusals, the rest counted in one overflow event.

import (
	"context"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

// AuditSessionDenied is the audit action of a refused connect, or of a
// refused person-facing operation (a role check, self-approval): details
// user, device, service, reason, client, message; repeats, first_at and
// last_at when it stands for several identical refusals.
const AuditSessionDenied = "session.denied"

// Denial is one refused attempt as the audit records it.
type Denial struct {
	// Operation is what was refused: "" for a connect, else the audit
	// action that would have been recorded (grant.create, ...).
	Operation string
	Target    string // for an operation: what it acted on (grant:ID, ...)
	User      string // the person's email ("" when there was no caller)
	Device    string // the device asked for, as the caller spelled it
	Service   string
	Reason    fieldpass.DenyReason
	Client    string // the client's address
	Message   string // what the person was told
}

// maxDenialField bounds what a refused caller's own text can put in the
// record: names longer than any valid one are cut.
const maxDenialField = 256

func clip(s string) string {
	if len(s) <= maxDenialField {
		return s
	}
	s = s[:maxDenialField]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

type denialKey struct{ op, target, user, device, service, reason, client string }

type denialCount struct {
	d           Denial
	repeats     int // after the first, which was written at once
	first, last time.Time
}

// denialLog coalesces refusals into audit events; see the file comment.
type denialLog struct {
	window time.Duration
	limit  int
	write  func(fieldpass.AuditEvent) // appends one event; must not block long
	actor  string                     // the broker's actor, for the overflow event

	mu       sync.Mutex // guards the fields below
	start    time.Time  // of the current window
	seen     map[denialKey]*denialCount
	overflow int // refusals not recorded one by one in this window
}

func (l *denialLog) event(d Denial, details map[string]any) fieldpass.AuditEvent {
	actor := "anonymous"
	if d.User != "" {
		actor = fieldpass.UserActor(d.User)
	}
	target := ""
	if fieldpass.ValidateDeviceName(d.Device) == nil {
		target = postgres.DeviceTarget(d.Device)
	}
	details["user"] = d.User
	details["device"] = d.Device
	details["service"] = d.Service
	details["reason"] = string(d.Reason)
	details["client"] = d.Client
	details["message"] = d.Message
	if d.Operation != "" {
		details["operation"] = d.Operation
		target = d.Target
	}
	e := fieldpass.AuditEvent{Actor: actor, Action: AuditSessionDenied, Target: target, Details: details}
	if fieldpass.ValidateAuditEvent(e) != nil {
		// An actor with control characters (a caller's own text): keep
		// the event, with the text only in the details, where JSON quotes it.
		e.Actor, e.Target = "anonymous", ""
	}
	return e
}

// note records d, refused at now. It reports whether d was the first of
// its kind in this window (written at once and worth a log line).
func (l *denialLog) note(now time.Time, d Denial) bool {
	d.Target, d.User, d.Device, d.Service, d.Client, d.Message = clip(d.Target), clip(d.User), clip(d.Device), clip(d.Service), clip(d.Client), clip(d.Message)
	l.roll(now)
	k := denialKey{d.Operation, d.Target, d.User, d.Device, d.Service, string(d.Reason), d.Client}
	l.mu.Lock()
	if c, ok := l.seen[k]; ok {
		c.repeats++
		c.last = now
		l.mu.Unlock()
		return false
	}
	if len(l.seen) >= l.limit {
		l.overflow++
		l.mu.Unlock()
		return false
	}
	l.seen[k] = &denialCount{d: d, first: now, last: now}
	l.mu.Unlock()
	l.write(l.event(d, map[string]any{}))
	return true
}

// roll closes the window if it is over: the repeats of each refusal, and
// the overflow, are written as one event each.
func (l *denialLog) roll(now time.Time) {
	l.mu.Lock()
	if now.Sub(l.start) < l.window && l.seen != nil {
		l.mu.Unlock()
		return
	}
	seen, overflow := l.seen, l.overflow
	l.start, l.seen, l.overflow = now, map[denialKey]*denialCount{}, 0
	l.mu.Unlock()
	l.emit(seen, overflow)
}

// flush writes what the window holds, whether or not it is over (at
// shutdown).
func (l *denialLog) flush() {
	l.mu.Lock()
	seen, overflow := l.seen, l.overflow
	l.seen, l.overflow = map[denialKey]*denialCount{}, 0
	l.mu.Unlock()
	l.emit(seen, overflow)
}

func (l *denialLog) emit(seen map[denialKey]*denialCount, overflow int) {
	for _, c := range seen {
		if c.repeats == 0 {
			continue
		}
		l.write(l.event(c.d, map[string]any{
			"repeats":  c.repeats,
			"first_at": c.first.UTC().Format(time.RFC3339Nano),
			"last_at":  c.last.UTC().Format(time.RFC3339Nano),
		}))
	}
	if overflow > 0 {
		l.write(fieldpass.AuditEvent{Actor: l.actor, Action: AuditSessionDenied, Details: map[string]any{
			"reason":  "coalesced",
			"repeats": overflow,
			"message": "more distinct refusals in one window than are recorded one by one; see the broker's log",
		}})
	}
}

// Denied records a refused attempt: in the audit chain (coalesced, see
// denialLog) and in the log. Open calls it for every refused connect;
// package access for refused operations.
func (m *Sessions) Denied(d Denial) {
	first := m.denials.note(m.cfg.Now(), d)
	lvl := "connect refused"
	if d.Operation != "" {
		lvl = d.Operation + " refused"
	}
	if !first {
		// Repeats are counted in the audit; keep the log as bounded.
		m.log.Debug(lvl, "user", clip(d.User), "device", clip(d.Device), "service", clip(d.Service),
			"reason", d.Reason, "client", d.Client)
		return
	}
	m.log.Info(lvl, "user", clip(d.User), "device", clip(d.Device), "service", clip(d.Service),
		"reason", d.Reason, "client", d.Client, "message", clip(d.Message))
}

// writeDenial appends e in the background: a refusal is answered at once,
// whether or not the store takes its record. The number of writes is
// bounded by the window's limit, so neither are these goroutines.
func (m *Sessions) writeDenial(e fieldpass.AuditEvent) {
	m.mu.Lock()
	done := m.denialsDone
	if !done {
		m.denialWG.Add(1)
	}
	m.mu.Unlock()
	if done {
		// Past shutdown's wait: the log is the only record left.
		m.log.Warn("refused attempt not recorded in the audit log: the broker is stopping", "actor", e.Actor, "details", e.Details)
		return
	}
	go func() {
		defer m.denialWG.Done()
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StoreTimeout)
		defer cancel()
		start := time.Now()
		_, err := m.db.AppendAudit(ctx, e)
		m.cfg.Metrics.AuditWrite("session_denied", start)
		if err != nil {
			m.log.Warn("refused attempt not recorded in the audit log", "actor", e.Actor, "details", e.Details, "err", err)
		}
	}()
}

func callerEmail(c *fieldpass.Caller) string {
	if c == nil || c.User == nil {
		return ""
	}
	return c.User.Email
}
