package apiserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
)

// TestMaxStreamsPerSession: a person with a grant must not be able to make
// the device open any number of connections to its service through one
// session (issue 10). Past MaxStreamsPerSession open streams, a new one is
// refused with a message that says why; closing one makes room.
func TestMaxStreamsPerSession(t *testing.T) {
	e := &connectEnv{}
	e.env = brokertest.New(t, brokertest.WithAPIConfig(func(env *brokertest.Env, cfg *apiserver.Config) {
		m := env.StartSessions(broker.SessionsConfig{})
		e.sessions, cfg.Sessions = m, m
		cfg.MaxStreamsPerSession = 3
	}))
	e.db, e.b, e.srv = e.env.DB, e.env.Broker, e.env.API
	e.echo = brokertest.NewEcho(t)
	e.startDevice("pump-1", map[string]string{"echo": e.echo.Addr})
	brokertest.WaitFor(t, 20*time.Second, "pump-1 online", func() bool { return e.b.Connected("pump-1") })
	ctx := context.Background()
	if _, err := e.db.EnsureUser(ctx, connectOperator, connectEngineer, []fieldpass.Role{fieldpass.RoleEngineer}); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.token, _, err = e.db.IssueToken(ctx, connectOperator, connectEngineer, fieldpass.TokenCLI, time.Hour); err != nil {
		t.Fatal(err)
	}
	e.grant(t, "pump-1", time.Time{}, "echo")

	conn, err := e.client().Connect(ctx, "pump-1", "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var open []interface{ Close() error }
	for i := 0; i < 3; i++ {
		st, err := conn.OpenStream()
		if err != nil {
			t.Fatalf("stream %d: %v", i+1, err)
		}
		open = append(open, st)
	}
	_, err = conn.OpenStream()
	if err == nil || !strings.Contains(err.Error(), "at most 3") {
		t.Fatalf("4th stream: err = %v, want a refusal naming the limit of 3", err)
	}
	t.Logf("4th stream refused: %v", err)
	if n := e.echo.Accepted(); n != 3 {
		t.Errorf("the device's service saw %d connections, want 3", n)
	}
	open[0].Close()
	brokertest.WaitFor(t, 5*time.Second, "a stream slot freed", func() bool {
		st, err := conn.OpenStream()
		if err != nil {
			return false
		}
		st.Close()
		return true
	})
}
