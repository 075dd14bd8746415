package broker_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector"
)

// syncBuffer is a log sink safe for the connector's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A connector whose device was disabled on the broker keeps failing to
// reach it; after a few attempts its log says what a person can check,
// not only "context deadline exceeded".
func TestDisabledDeviceConnectorSaysWhy(t *testing.T) {
	e := brokertest.New(t)
	var logs syncBuffer
	e.StartConnector(e.Enroll("pump-1"), map[string]string{"echo": brokertest.EchoServer(t)}, func(c *connector.Config) {
		c.DialTimeout = 300 * time.Millisecond
		c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 100*time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-1") })
	if _, err := e.DB.SetDeviceState(context.Background(), "pump-1", fieldpass.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 20*time.Second, "the connector's log to name the likely causes", func() bool {
		return strings.Contains(logs.String(), "disabled or decommissioned on the broker")
	})
}
