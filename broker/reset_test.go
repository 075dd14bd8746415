package broker_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
)

// tailService is a device service that sends without end and never reads,
// as a log tail or a download does: only the connector closing its
// connection stops it. It reports when its writes fail.
func tailService(t *testing.T) (addr string, closed chan time.Time) {
	closed = make(chan time.Time, 4)
	addr = brokertest.Service(t, func(c *net.TCPConn) {
		buf := make([]byte, 16<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				closed <- time.Now()
				return
			}
		}
	})
	return addr, closed
}

// newTailEnv is a sessionEnv whose device pump-1 exposes a tail service.
func newTailEnv(t *testing.T) (*sessionEnv, chan time.Time) {
	e := brokertest.New(t)
	addr, closed := tailService(t)
	se := &sessionEnv{Env: e, tb: t}
	e.StartConnector(e.Enroll("pump-1"), map[string]string{"tail": addr}, nil)
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-1") })
	u, err := e.DB.EnsureUser(context.Background(), testOperator, engineer, []fieldpass.Role{fieldpass.RoleEngineer})
	if err != nil {
		t.Fatal(err)
	}
	se.user = u
	se.startSessions(nil)
	return se, closed
}

// A stream cut on the broker (here: its session ended, the person's side
// gone at once) closes the device's connection to its service too, at
// once, though the service never stops sending: the broker resets the
// stream at the connector (tunnel.Reset). yamux alone half-closes, and the
// service would be held open until yamux's 5-minute close timeout.
func TestStreamCutClosesDeviceService(t *testing.T) {
	for _, tt := range []struct {
		name string
		cut  func(se *sessionEnv, s *broker.Session, st interface{ Close() error }, g *fieldpass.Grant)
	}{
		{"session ended", func(se *sessionEnv, s *broker.Session, _ interface{ Close() error }, g *fieldpass.Grant) {
			if _, err := se.DB.RevokeGrant(context.Background(), testOperator, g.ID); err != nil {
				t.Fatal(err)
			}
		}},
		{"person's side closed", func(_ *sessionEnv, _ *broker.Session, st interface{ Close() error }, _ *fieldpass.Grant) {
			st.Close()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			se, closed := newTailEnv(t)
			g := se.grant(time.Time{}, "tail")
			s, err := se.open("pump-1", "tail")
			if err != nil {
				t.Fatal(err)
			}
			st, err := s.Stream(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// Read some, then stop reading: the person is gone, and the
			// stream's window fills behind them.
			buf := make([]byte, 64<<10)
			if _, err := st.Read(buf); err != nil {
				t.Fatal(err)
			}
			at := time.Now()
			tt.cut(se, s, st, g)
			select {
			case when := <-closed:
				took := when.Sub(at)
				t.Logf("device service saw its connection close %s after the cut", took.Round(time.Millisecond))
				// The aim is well under a second; the bound here only
				// tells a reset from yamux's five-minute timeout on a
				// busy test machine.
				if took > 5*time.Second {
					t.Errorf("service closed %s after the cut, want within a second or so", took)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the device's service was still connected 15s after the cut")
			}
		})
	}
}
