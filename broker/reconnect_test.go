package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/postgres"
)

// waitStreamEnd waits for a stream held by holdStream to end.
func waitStreamEnd(tb testing.TB, closed chan struct{}, timeout time.Duration, what string) {
	tb.Helper()
	select {
	case <-closed:
	case <-time.After(timeout):
		tb.Fatalf("%s: the stream in flight still open after %s", what, timeout)
	}
}

// TestSessionOutlivesConnectorRestart: a connector restarted with the same
// state while a person's session is open. The stream in flight ends; the
// session and its one row stay open; a new stream on the same session
// reaches the device; and the record counts the reconnect and the cut.
// Killed: the broker learns of it from the new hello, which replaces the
// old tunnel. Stopped: it says goodbye, the device is away for a moment.
func TestSessionOutlivesConnectorRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill bool
	}{{"killed", true}, {"stopped", false}} {
		t.Run(tc.name, func(t *testing.T) {
			se := newSessionEnv(t, nil)
			se.grant(time.Time{}, "echo")
			s := se.mustOpen()
			st, closed := holdStream(t, s)
			defer st.Close()
			waitFor(t, "the echo of the first stream", func() bool { return s.Record().BytesOut == 4 })

			se.conn = se.Restart(se.conn, tc.kill)
			waitStreamEnd(t, closed, 20*time.Second, "restart")
			brokertest.WaitFor(t, 20*time.Second, "device back", func() bool { return se.Broker.Connected("pump-1") })
			select {
			case <-s.Done():
				t.Fatalf("session ended (%s) by a device reconnect", s.Reason())
			default:
			}
			if r := se.row(s.ID()); !r.Open() {
				t.Fatalf("row ended (%s) by a device reconnect", r.EndReason)
			}

			st2, err := s.Stream(context.Background())
			if err != nil {
				t.Fatalf("new stream on the same session after the reconnect: %v", err)
			}
			roundTrip(t, st2, 10000)
			if n := se.echo.Accepted(); n != 2 {
				t.Errorf("service saw %d connections, want 2", n)
			}
			if rs := se.rows(); len(rs) != 1 {
				t.Fatalf("%d session rows, want 1", len(rs))
			}
			brokertest.WaitFor(t, 5*time.Second, "the reconnect on the open row", func() bool {
				r := se.row(s.ID())
				return r.Open() && r.DeviceReconnects == 1 && r.StreamsCut == 1
			})
			evs, err := se.DB.AuditEvents(context.Background(), fieldpass.AuditFilter{
				Action: fieldpass.AuditSessionDeviceReconnected, Target: postgres.SessionTarget(s.ID())})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1 || evs[0].Actor != "broker:test-broker" || evs[0].Details["streams_cut"] != float64(1) || evs[0].Details["device"] != "pump-1" {
				t.Fatalf("reconnect events: %+v; want one by broker:test-broker, device pump-1, streams_cut 1", evs)
			}
			t.Logf("device away %s", evs[0].Details["away"])

			s.End(fieldpass.EndClientClosed)
			r := se.waitEnded(s.ID(), 5*time.Second)
			if r.EndReason != fieldpass.EndClientClosed || r.DeviceReconnects != 1 || r.StreamsCut != 1 || r.BytesIn != 10004 {
				t.Fatalf("ended row: %s, %d reconnects, %d cut, %d bytes in; want client_closed, 1, 1, 10004",
					r.EndReason, r.DeviceReconnects, r.StreamsCut, r.BytesIn)
			}
		})
	}
}

// TestSessionStreamWaitsForDevice: a stream asked for while the device is
// away waits for it and goes through once it is back; one asked for in a
// gap longer than its deadline says the device is reconnecting.
func TestSessionStreamWaitsForDevice(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	se.conn.Stop()
	brokertest.WaitFor(t, 10*time.Second, "device away", func() bool { return !se.Broker.Connected("pump-1") })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := s.Stream(ctx)
	cancel()
	if fieldpass.ErrorCode(err) != fieldpass.EUNAVAILABLE || !strings.Contains(err.Error(), "device pump-1 is offline, reconnecting") {
		t.Fatalf("stream while away: %v; want unavailable: device pump-1 is offline, reconnecting", err)
	}
	type result struct {
		err error
		at  time.Time
	}
	got := make(chan result, 1)
	go func() {
		st, err := s.Stream(context.Background())
		if err == nil {
			roundTrip(t, st, 100)
		}
		got <- result{err, time.Now()}
	}()
	time.Sleep(500 * time.Millisecond)
	se.conn = se.StartAgain(se.conn)
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("stream that waited for the device: %v", r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("stream still waiting after the device came back")
	}
	if s.Reason() != "" {
		t.Fatalf("session ended: %s", s.Reason())
	}
	s.End("")
	if r := se.waitEnded(s.ID(), 5*time.Second); r.DeviceReconnects != 1 || r.StreamsCut != 0 {
		t.Fatalf("row: %d reconnects, %d cut; want 1, 0", r.DeviceReconnects, r.StreamsCut)
	}
}

// TestSessionDeviceNotBack: a device away past ReconnectWait ends the
// session device_closed, with the stream it cut on the record.
func TestSessionDeviceNotBack(t *testing.T) {
	const wait = 1500 * time.Millisecond
	se := newSessionEnv(t, func(c *broker.SessionsConfig) { c.ReconnectWait = wait })
	se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	st, closed := holdStream(t, s)
	defer st.Close()
	away := time.Now() // before the drop: the wait starts after it
	se.conn.Stop()
	waitStreamEnd(t, closed, 5*time.Second, "stop")
	waitDone(t, s, wait+5*time.Second)
	took := time.Since(away)
	if s.Reason() != fieldpass.EndDeviceClosed {
		t.Fatalf("reason %s, want device_closed", s.Reason())
	}
	if took < wait {
		t.Errorf("ended %s after the device left, before the wait of %s", took, wait)
	}
	t.Logf("ended %s after the device left (wait %s)", took.Round(time.Millisecond), wait)
	r := se.waitEnded(s.ID(), 5*time.Second)
	if r.EndReason != fieldpass.EndDeviceClosed || r.DeviceReconnects != 0 || r.StreamsCut != 1 {
		t.Fatalf("row: %s, %d reconnects, %d cut; want device_closed, 0, 1", r.EndReason, r.DeviceReconnects, r.StreamsCut)
	}
}

// TestSessionNoReconnectWait: a negative ReconnectWait ends sessions when
// their device's tunnel drops, as before sessions outlived reconnects.
func TestSessionNoReconnectWait(t *testing.T) {
	se := newSessionEnv(t, func(c *broker.SessionsConfig) { c.ReconnectWait = -1 })
	se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	se.conn = se.Restart(se.conn, true)
	waitDone(t, s, 20*time.Second)
	if s.Reason() != fieldpass.EndDeviceClosed {
		t.Fatalf("reason %s, want device_closed", s.Reason())
	}
}

// TestSessionRulesApplyWhileDeviceAway: a revocation, or the device being
// disabled, during the gap ends the session within a second, with its own
// reason.
func TestSessionRulesApplyWhileDeviceAway(t *testing.T) {
	t.Run("revoked", func(t *testing.T) {
		se := newSessionEnv(t, nil)
		g := se.grant(time.Time{}, "echo")
		s := se.mustOpen()
		se.conn.Stop()
		brokertest.WaitFor(t, 10*time.Second, "device away", func() bool { return !se.Broker.Connected("pump-1") })
		time.Sleep(200 * time.Millisecond)
		at := time.Now()
		if _, err := se.DB.RevokeGrant(context.Background(), testOperator, g.ID); err != nil {
			t.Fatal(err)
		}
		waitDone(t, s, 3*time.Second)
		if took := time.Since(at); took > time.Second {
			t.Errorf("revoked during the gap: ended %s later, want within 1s", took)
		} else {
			t.Logf("revoked during the gap: ended %s later", took.Round(time.Millisecond))
		}
		if s.Reason() != fieldpass.EndGrantRevoked {
			t.Fatalf("reason %s, want grant_revoked", s.Reason())
		}
		if r := se.waitEnded(s.ID(), 5*time.Second); r.EndReason != fieldpass.EndGrantRevoked {
			t.Fatalf("row: %s, want grant_revoked", r.EndReason)
		}
	})
	t.Run("device disabled", func(t *testing.T) {
		se := newSessionEnv(t, nil)
		se.grant(time.Time{}, "echo")
		s := se.mustOpen()
		se.conn.Stop()
		brokertest.WaitFor(t, 10*time.Second, "device away", func() bool { return !se.Broker.Connected("pump-1") })
		at := time.Now()
		if _, err := se.DB.SetDeviceState(context.Background(), "pump-1", fieldpass.DeviceDisabled); err != nil {
			t.Fatal(err)
		}
		waitDone(t, s, 3*time.Second)
		if took := time.Since(at); took > time.Second {
			t.Errorf("disabled during the gap: ended %s later, want within 1s", took)
		}
		if s.Reason() != fieldpass.EndDeviceDisabled {
			t.Fatalf("reason %s, want device_disabled", s.Reason())
		}
	})
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	brokertest.WaitFor(tb, 10*time.Second, what, cond)
}

// TestSessionEndsWithItsCutStream: a client that closes its session as
// soon as a device reconnect cut its only stream (fieldpass ssh: one stream
// per session) ends it device_closed, not client_closed; one that closes
// later, or after opening another stream, ends it client_closed.
func TestSessionEndsWithItsCutStream(t *testing.T) {
	se := newSessionEnv(t, nil)
	se.grant(time.Time{}, "echo")
	s := se.mustOpen()
	later := se.mustOpen()
	st, closed := holdStream(t, s)
	st2, closed2 := holdStream(t, later)
	se.conn = se.Restart(se.conn, true)
	waitStreamEnd(t, closed, 20*time.Second, "restart")
	waitStreamEnd(t, closed2, 20*time.Second, "restart")
	st.Close()
	s.End(fieldpass.EndClientClosed)
	if r := se.waitEnded(s.ID(), 5*time.Second); r.EndReason != fieldpass.EndDeviceClosed || r.StreamsCut != 1 {
		t.Fatalf("closed with its cut stream: %s, %d cut; want device_closed, 1", r.EndReason, r.StreamsCut)
	}
	st2.Close()
	time.Sleep(2100 * time.Millisecond)
	later.End(fieldpass.EndClientClosed)
	if r := se.waitEnded(later.ID(), 5*time.Second); r.EndReason != fieldpass.EndClientClosed || r.StreamsCut != 1 {
		t.Fatalf("closed later: %s, %d cut; want client_closed, 1", r.EndReason, r.StreamsCut)
	}
}
