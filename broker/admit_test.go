package broker_test

import (
	"context"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector"
)

// With a fleet, a broker takes a device's lease at its hello, a moment
// before the device's tunnel is up; a connect in that moment (at this
// broker, or relayed here by another) waits for the tunnel instead of
// telling the person "offline", and one that waits in vain is refused so.
func TestFleetConnectWaitsForAdmittedDevice(t *testing.T) {
	e := brokertest.New(t)
	e.Stop()
	ca := brokertest.NewLinkCA(t)
	a := startFleetBroker(t, e, ca, "broker-a")
	ctx := context.Background()
	s := e.Enroll("pump-1")
	user, _ := engineerGranted(t, e, "pump-1", "echo")
	d, err := e.DB.Device(ctx, "pump-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.b.TakeLease(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	caller := &fieldpass.Caller{User: user}

	// No tunnel comes: refused as offline once the wait is over.
	short, err := broker.NewSessions(ctx, a.b, e.DB, broker.SessionsConfig{AdmitWait: 300 * time.Millisecond, Logger: brokertest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := short.Open(ctx, caller, "pump-1", "echo", "192.0.2.7"); fieldpass.DenyReasonOf(err) != fieldpass.DenyDeviceOffline {
		t.Fatalf("connect, the lease held here and no tunnel: %v (reason %q), want device_offline", err, fieldpass.DenyReasonOf(err))
	}
	if took := time.Since(t0); took < 300*time.Millisecond {
		t.Errorf("refused after %s: it did not wait for the tunnel", took)
	}

	// The tunnel comes while a connect waits: the connect goes through.
	long, err := broker.NewSessions(ctx, a.b, e.DB, broker.SessionsConfig{AdmitWait: 30 * time.Second, Logger: brokertest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		s   *broker.Session
		err error
	}
	opened := make(chan result, 1)
	go func() {
		s, err := long.Open(ctx, caller, "pump-1", "echo", "192.0.2.7")
		opened <- result{s, err}
	}()
	select {
	case r := <-opened:
		t.Fatalf("the connect was answered before the device connected: %v", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	echo := brokertest.EchoServer(t)
	e.StartConnector(s, map[string]string{"echo": echo}, func(c *connector.Config) {
		c.State.Endpoints = []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.b.ListenPort()).String()}
	})
	var r result
	select {
	case r = <-opened:
	case <-time.After(40 * time.Second):
		t.Fatal("the connect still waits after the device connected")
	}
	if r.err != nil {
		t.Fatalf("connect while the device's tunnel came up: %v", r.err)
	}
	defer r.s.End(fieldpass.EndClientClosed)
	st, err := r.s.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(st, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo = %q, %v", got, err)
	}
}
