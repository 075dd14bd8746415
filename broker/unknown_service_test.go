package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker/brokertest"
)

// TestUnknownServiceSaysOnlyThat: issue 10 found the connector's "unknown
// service" reply listing every service the device exposes, passed on by the
// broker to the person: a map of the device for anyone with a grant to one
// of its services.
func TestUnknownServiceSaysOnlyThat(t *testing.T) {
	e := brokertest.New(t)
	s := e.Enroll("pump-9")
	e.StartConnector(s, map[string]string{"echo": brokertest.EchoServer(t), "secret-admin-ui": brokertest.ClosedPort(t)}, nil)
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-9") })
	_, err := e.Broker.OpenStream(context.Background(), "pump-9", "telnet", newSessionID(t))
	if fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND || !strings.Contains(err.Error(), "telnet") {
		t.Fatalf("err = %v, want not_found naming the service asked for", err)
	}
	if msg := err.Error(); strings.Contains(msg, "echo") || strings.Contains(msg, "secret-admin-ui") {
		t.Fatalf("the refusal lists the device's services: %q", msg)
	}
	t.Logf("refusal: %v", err)
}
