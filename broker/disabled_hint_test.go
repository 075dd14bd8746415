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

// A connector whose device is disabled is told so by the broker at its
// hello (the broker keeps the key as a barred peer), says it once in its
// log, waits its long DisabledBackoff between calls, and comes back at once
// when the device is enabled again (the broker calls it back).
func TestDisabledDeviceConnectorIsTold(t *testing.T) {
	e := brokertest.New(t)
	var logs syncBuffer
	e.StartConnector(e.Enroll("pump-1"), map[string]string{"echo": brokertest.EchoServer(t)}, func(c *connector.Config) {
		c.DialTimeout = 2 * time.Second
		c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 100*time.Millisecond
		// Far longer than the test: only the broker's call brings it back.
		c.DisabledBackoff = time.Hour
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-1") })
	ctx := context.Background()
	if _, err := e.DB.SetDeviceState(ctx, "pump-1", fieldpass.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	const told = "the broker refuses this device"
	took := brokertest.WaitFor(t, 20*time.Second, "the connector to say the broker refuses it", func() bool {
		return strings.Contains(logs.String(), told)
	})
	t.Logf("connector told it is disabled %s after the change", took.Round(time.Millisecond))
	time.Sleep(time.Second) // a connector that kept calling would say it again
	out := logs.String()
	if n := strings.Count(out, told); n != 1 {
		t.Errorf("said %d times, want once:\n%s", n, out)
	}
	for _, want := range []string{"level=ERROR", "is disabled", "fieldpass-broker device enable pump-1", "retry_in=1h0m0s"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "does not answer through the tunnel") {
		t.Errorf("connector timed out instead of being told:\n%s", out)
	}
	if e.Broker.Connected("pump-1") {
		t.Fatal("a disabled device is connected")
	}
	if _, err := e.DB.SetDeviceState(ctx, "pump-1", fieldpass.DeviceActive); err != nil {
		t.Fatal(err)
	}
	took = brokertest.WaitFor(t, 20*time.Second, "the connector back once enabled", func() bool { return e.Broker.Connected("pump-1") })
	t.Logf("connector back %s after the device was enabled", took.Round(time.Millisecond))
}

// A decommissioned device's connector is told so, and what to do; so is
// one that calls a broker started later (the retired key is in Postgres).
func TestDecommissionedDeviceConnectorIsTold(t *testing.T) {
	e := brokertest.New(t)
	state := e.Enroll("pump-1")
	start := func(logs *syncBuffer) *brokertest.Connector {
		return e.StartConnector(state, map[string]string{"echo": brokertest.EchoServer(t)}, func(c *connector.Config) {
			c.DialTimeout = 2 * time.Second
			c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 100*time.Millisecond
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		})
	}
	const told = "was decommissioned, which is final: enrol this device again with a new token"
	var logs syncBuffer
	c := start(&logs)
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-1") })
	if _, err := e.DB.SetDeviceState(context.Background(), "pump-1", fieldpass.DeviceDecommissioned); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 20*time.Second, "the connector to say it was decommissioned", func() bool {
		return strings.Contains(logs.String(), told)
	})
	c.Stop()
	e.Stop()
	e.Start()
	var again syncBuffer
	start(&again)
	brokertest.WaitFor(t, 20*time.Second, "a restarted broker to tell it too", func() bool {
		return strings.Contains(again.String(), told)
	})
}
