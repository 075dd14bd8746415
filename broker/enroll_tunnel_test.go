package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/connector/httpsenroll"
	"github.com/fieldpass/fieldpass/wgnet"
)

// TestEnrollInTunnel enrols a connector inside WireGuard, with the token's
// key pair and no HTTPS: the device row, the used token and the audit
// event are there, the connector then comes up with its own key, the
// token's peer is gone, and the token enrols nothing more.
func TestEnrollInTunnel(t *testing.T) {
	t.Parallel()
	e := brokertest.New(t)
	ctx := context.Background()
	tok, _, err := e.DB.CreateEnrollmentToken(ctx, "pump-9", map[string]string{"site": "north"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, tokenPub := fieldpass.EnrollmentKey(tok)
	brokertest.WaitFor(t, 5*time.Second, "the token's peer admitted", func() bool { return hasPeer(e, tokenPub) })

	cfg := e.TunnelEnrollConfig(tok)
	s, err := connector.EnrollInTunnel(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.DB.Device(ctx, "pump-9")
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != s.DeviceID || d.PublicKey != s.PrivateKey.Public().String() || d.TunnelAddr != s.TunnelAddress || d.Labels["site"] != "north" {
		t.Errorf("device row %+v does not match the state %+v", d, s)
	}
	if s.BrokerAddress != e.Broker.Address() || s.BrokerKey != e.Broker.PublicKey().String() || len(s.Endpoints) != 1 || s.Endpoints[0] != e.Endpoint().String() {
		t.Errorf("state: %+v", s)
	}
	if p, err := e.DB.EnrollmentPeerOf(ctx, tok); p != nil || err != nil {
		t.Errorf("the token is still outstanding: %+v, %v", p, err)
	}
	events, err := e.DB.AuditEvents(ctx, fieldpass.AuditFilter{Action: fieldpass.AuditDeviceEnroll})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Target != "device:pump-9" {
		t.Errorf("device.enroll events: %+v", events)
	}
	brokertest.WaitFor(t, 5*time.Second, "the token's peer removed", func() bool { return !hasPeer(e, tokenPub) })

	c := e.StartConnector(s, map[string]string{"echo": brokertest.EchoServer(t)}, nil)
	defer c.Stop()
	brokertest.WaitFor(t, 10*time.Second, "the enrolled connector online", func() bool {
		d, err := e.DB.Device(ctx, "pump-9")
		return err == nil && d.Presence.Online
	})

	again := cfg
	again.StateDir = t.TempDir() + "/again"
	again.Timeout = 3 * time.Second
	if _, err := connector.EnrollInTunnel(ctx, again); fieldpass.ErrorCode(err) != fieldpass.EUNAVAILABLE {
		t.Errorf("second enrolment with the token: %v, want no answer (its peer is gone)", err)
	}
}

// TestEnrollInTunnelExpired: an expired token's peer is removed at its
// expiry, and a token for a name enrolled meanwhile is refused by name.
func TestEnrollInTunnelExpired(t *testing.T) {
	t.Parallel()
	e := brokertest.New(t)
	ctx := context.Background()
	tok, _, err := e.DB.CreateEnrollmentToken(ctx, "short", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, pub := fieldpass.EnrollmentKey(tok)
	brokertest.WaitFor(t, 5*time.Second, "the token's peer admitted", func() bool { return hasPeer(e, pub) })
	brokertest.WaitFor(t, 5*time.Second, "the expired token's peer removed", func() bool { return !hasPeer(e, pub) })

	// Two tokens for one name: once one enrols it, the other is refused
	// by name, and its peer dropped.
	first, _, err := e.DB.CreateEnrollmentToken(ctx, "dup", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	second, _, err := e.DB.CreateEnrollmentToken(ctx, "dup", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, pub2 := fieldpass.EnrollmentKey(second)
	cfg := e.TunnelEnrollConfig(second)
	// The first over HTTPS: both paths live side by side.
	if _, err := httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: e.URL, Token: first, StateDir: t.TempDir() + "/first"}); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 5*time.Second, "the second token's peer admitted", func() bool { return hasPeer(e, pub2) })
	_, err = connector.EnrollInTunnel(ctx, cfg)
	if fieldpass.ErrorCode(err) != fieldpass.ECONFLICT {
		t.Fatalf("enrol a name already enrolled: %v, want conflict", err)
	}
	brokertest.WaitFor(t, 2*time.Second, "the refused token's peer removed", func() bool { return !hasPeer(e, pub2) })
}

func hasPeer(e *brokertest.Env, pub [32]byte) bool {
	return e.Broker.HasPeer(wgnet.Key(pub))
}
