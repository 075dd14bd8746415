package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector"
)

// logRecorder is a slog.Handler that keeps each record's time and message
// (and logs all but debug lines to the test), so a test can read when a
// connector did what.
type logRecorder struct {
	t    testing.TB
	name string
	mu   *sync.Mutex
	recs *[]logRecord
}

type logRecord struct {
	at  time.Time
	msg string
}

func newLogRecorder(t testing.TB, name string) *logRecorder {
	return &logRecorder{t: t, name: name, mu: &sync.Mutex{}, recs: &[]logRecord{}}
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var sb strings.Builder
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, logRecord{at: r.Time, msg: r.Message})
	h.mu.Unlock()
	if r.Level < slog.LevelInfo && !strings.HasPrefix(r.Message, "nudged") {
		return nil // WireGuard's own debug lines
	}
	h.t.Logf("%s %s: %s%s", r.Time.Format("15:04:05.000"), h.name, r.Message, sb.String())
	return nil
}

// since returns the records from t on.
func (h *logRecorder) since(t time.Time) []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logRecord
	for _, r := range *h.recs {
		if !r.at.Before(t) {
			out = append(out, r)
		}
	}
	return out
}

// broker-b, holding every device, stops cleanly; broker-a, given them all,
// calls them back at 2 a second, so most calls come after broker-b's
// WireGuard is gone, while a device's own redial to it is waiting for an
// answer (its dial timeout is the default 20 s). A call that comes then
// cuts the attempt short: the device is back at broker-a at once, in one
// session that stays up, not after its dial timeout or after a second
// round of backoff.
func TestFleetCallbackCutsShortADialToAStoppedBroker(t *testing.T) {
	const (
		n           = 6
		dialTimeout = 20 * time.Second
	)
	e := brokertest.New(t)
	e.Stop()
	ca := brokertest.NewLinkCA(t)
	startFleetBrokerCtx(t, context.Background(), e, ca, "broker-a", e.DB, func(cfg *broker.Config) { cfg.NudgeRate = 2 })
	b := startCrashableBroker(t, e, ca, "broker-b")
	ids := map[string]string{}
	logs := map[string]*logRecorder{}
	echo := brokertest.EchoServer(t)
	for i := range n {
		name := fmt.Sprintf("pump-%d", i+1)
		s := e.Enroll(name)
		ids[name] = s.DeviceID
		logs[name] = newLogRecorder(t, name)
		e.StartConnector(s, map[string]string{"echo": echo}, func(c *connector.Config) {
			// Only broker-b's endpoint: a device comes back only when
			// broker-a calls it.
			c.State.Endpoints = []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.b.ListenPort()).String()}
			c.DialTimeout = dialTimeout
			c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
			c.Logger = slog.New(logs[name])
		})
	}
	// Held, and where each was heard recorded: only those are called back.
	brokertest.WaitFor(t, 30*time.Second, "broker-b to hold every device, its endpoint recorded", func() bool {
		for name, h := range holders(t, e, ids) {
			d, err := e.DB.Device(context.Background(), name)
			if h != "broker-b" || err != nil || d.Presence.BrokerID != "broker-b" || d.Presence.Endpoint == "" {
				return false
			}
		}
		return true
	})
	t0 := time.Now()
	b.cancel() // a clean stop
	waitHolders(t, e, ids, 60*time.Second, "every device held by broker-a", func(hs map[string]string) bool {
		return countHolders(hs)["broker-a"] == n
	})
	t.Logf("all %d devices held by broker-a %s after broker-b began its clean stop", n, time.Since(t0).Round(time.Millisecond))
	// A session torn down just after it came up shows within a moment.
	time.Sleep(time.Second)

	cutShort := 0
	for i := range n {
		name := fmt.Sprintf("pump-%d", i+1)
		l := logs[name]
		recs := l.since(t0)
		var called, back, own time.Time
		midDial := false
		for _, r := range recs {
			switch {
			case called.IsZero() && own.IsZero() && r.msg == "connected to broker":
				own = r.at // back by its own retry, before any call
			case called.IsZero() && strings.HasPrefix(r.msg, "nudged"):
				called = r.at
			case !called.IsZero() && strings.HasPrefix(r.msg, "a broker called while this device was dialling"):
				midDial = true
			case !called.IsZero() && back.IsZero() && r.msg == "connected to broker":
				back = r.at
			case !back.IsZero() && r.msg == "broker session ended":
				t.Errorf("%s: its session at broker-a ended %s after it came up: the call back cost a second connection", name, r.at.Sub(back).Round(time.Millisecond))
			}
		}
		if called.IsZero() && !own.IsZero() {
			// Its own retry reached broker-a before the call: nothing
			// to answer, and no second connection.
			t.Logf("%s: back on its own %s after the stop, before any call", name, own.Sub(t0).Round(time.Millisecond))
			continue
		}
		if called.IsZero() || back.IsZero() {
			t.Errorf("%s: called back at %v, connected after it at %v; want both", name, called, back)
			continue
		}
		if midDial {
			cutShort++
		}
		took := back.Sub(called)
		t.Logf("%s: called back %s after the stop, connected %s later (attempt cut short: %v)", name, called.Sub(t0).Round(time.Millisecond), took.Round(time.Millisecond), midDial)
		// Not a speed target: whether the device waited out the attempt
		// it was making (dialTimeout) or answered the call.
		if took >= dialTimeout/2 {
			t.Errorf("%s: connected %s after the call back: it waited out its attempt to reach broker-b", name, took)
		}
	}
	if cutShort == 0 {
		t.Error("no device was dialling when it was called back: the case under test did not occur")
	}
}
