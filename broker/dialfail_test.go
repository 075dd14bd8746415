package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
)

// A session whose service the connector cannot dial ends dial_failed, not
// client_closed, with the connector's error in its audit event; one that
// reached its service once keeps the person's own end.
func TestSessionDialFailed(t *testing.T) {
	env := newEchoDownEnv(t)
	e, u, m := env.e, env.user, env.m
	ctx := context.Background()
	ended := func(id string) *fieldpass.Session { return env.ended(t, id) }

	s, err := m.Open(ctx, &fieldpass.Caller{User: u}, "pump-1", "down", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stream(ctx); err == nil || !strings.Contains(err.Error(), "dial failed") {
		t.Fatalf("stream to a closed port: %v, want dial failed", err)
	}
	s.End(fieldpass.EndClientClosed) // the person gives up, as ssh does
	r := ended(s.ID())
	if r.EndReason != fieldpass.EndDialFailed || r.BytesIn != 0 || r.BytesOut != 0 {
		t.Fatalf("row: reason %s, bytes %d/%d; want dial_failed, 0/0", r.EndReason, r.BytesIn, r.BytesOut)
	}
	es, err := e.DB.AuditEvents(ctx, fieldpass.AuditFilter{Action: fieldpass.AuditSessionEnd, Target: "session:" + s.ID()})
	if err != nil || len(es) != 1 {
		t.Fatalf("session.end events: %v, %v", es, err)
	}
	if de, _ := es[0].Details["dial_error"].(string); !strings.Contains(de, "dial failed") || !strings.Contains(de, "refused") {
		t.Fatalf("session.end details %v: want dial_error with the connector's error", es[0].Details)
	}

	// Reached once: the person's end stands.
	s, err = m.Open(ctx, &fieldpass.Caller{User: u}, "pump-1", "echo", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	s.End(fieldpass.EndClientClosed)
	if r := ended(s.ID()); r.EndReason != fieldpass.EndClientClosed {
		t.Fatalf("reached session ended %s, want client_closed", r.EndReason)
	}
}

// echoDownEnv is a broker with pump-1 online, exposing echo (an echo
// server) and down (a port where nothing listens), the engineer granted
// both for an hour, and the session manager.
type echoDownEnv struct {
	e    *brokertest.Env
	user *fieldpass.User
	m    *broker.Sessions
}

func newEchoDownEnv(t *testing.T) *echoDownEnv {
	t.Helper()
	e := brokertest.New(t)
	echo := brokertest.NewEcho(t)
	e.StartConnector(e.Enroll("pump-1"), map[string]string{"echo": echo.Addr, "down": brokertest.ClosedPort(t)}, nil)
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-1") })
	u, _ := engineerGranted(t, e, "pump-1", "echo", "down")
	return &echoDownEnv{e: e, user: u, m: e.StartSessions(broker.SessionsConfig{})}
}

// ended waits for session id's row to show its end.
func (env *echoDownEnv) ended(t *testing.T, id string) *fieldpass.Session {
	t.Helper()
	var r *fieldpass.Session
	brokertest.WaitFor(t, 5*time.Second, "session row ended", func() bool {
		var err error
		r, err = env.e.DB.Session(context.Background(), id)
		return err == nil && !r.Open()
	})
	return r
}
