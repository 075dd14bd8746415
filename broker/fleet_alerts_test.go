package broker_test

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/brokerlink"
	"github.com/fieldpass/fieldpass/connector"
)

// alertingFleet is brokers of one fleet, each with its own Notifier (as
// each serve process has), all claiming alerts in e's database and
// delivering to one webhook.
type alertingFleet struct {
	sink     *alertSink
	url      string
	brokers  map[string]*broker.Broker
	notifier map[string]*alerts.Notifier
}

func newAlertingFleet(t *testing.T) *alertingFleet {
	sink := &alertSink{}
	srv := httptest.NewServer(sink)
	t.Cleanup(func() {
		srv.Close()
		if sink.bad > 0 {
			t.Errorf("%d deliveries with a bad signature or body", sink.bad)
		}
	})
	return &alertingFleet{sink: sink, url: srv.URL, brokers: map[string]*broker.Broker{}, notifier: map[string]*alerts.Notifier{}}
}

// start runs broker id of the fleet, raising device_offline offlineAfter
// after a device it saw leaves (or after its start), until the test ends.
func (f *alertingFleet) start(t *testing.T, e *brokertest.Env, ca *brokertest.LinkCA, id string, offlineAfter time.Duration) *broker.Broker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n, err := alerts.New(alerts.Config{URL: f.url, Secret: alertSecret, MinBackoff: 10 * time.Millisecond, Claims: e.DB, Logger: brokertest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	alertsDone := make(chan struct{})
	go func() { defer close(alertsDone); n.Run(ctx) }()
	_, clientTLS := ca.Configs(t, id)
	links, err := brokerlink.NewDialer(clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(ctx, broker.Config{
		ID: id, PrivateKey: e.Key, WGListen: netip.MustParseAddrPort("127.0.0.1:0"),
		PresenceInterval: 200 * time.Millisecond, Logger: brokertest.Logger(),
		Alerts: n, OfflineAlertAfter: offlineAfter,
		Fleet: &broker.FleetConfig{LeaseTTL: 3 * time.Second, PeerAddr: "127.0.0.1:1", Links: links},
	}, e.DB)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); b.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-served
		b.Close()
		<-alertsDone
		links.Close()
	})
	f.brokers[id], f.notifier[id] = b, n
	return b
}

func (f *alertingFleet) duplicates() uint64 {
	var n uint64
	for _, nt := range f.notifier {
		n += nt.Duplicates()
	}
	return n
}

// Three brokers start while a device they have all seen in the database
// is offline: each arms its device_offline alert for it, and the webhook
// gets one, not three.
func TestFleetOfflineAtStartAlertsOnce(t *testing.T) {
	e := brokertest.New(t)
	s := e.Enroll("pump-1")
	c := e.StartConnector(s, map[string]string{"echo": brokertest.EchoServer(t)}, nil)
	brokertest.WaitFor(t, 20*time.Second, "pump-1 online", func() bool { return e.Broker.Connected("pump-1") })
	c.Stop()
	brokertest.WaitFor(t, 10*time.Second, "pump-1 offline", func() bool { return !e.Broker.Connected("pump-1") })
	e.Stop()

	ca := brokertest.NewLinkCA(t)
	f := newAlertingFleet(t)
	const after = 300 * time.Millisecond
	for _, id := range []string{"broker-a", "broker-b", "broker-c"} {
		f.start(t, e, ca, id, after)
	}
	brokertest.WaitFor(t, 10*time.Second, "a device_offline alert", func() bool { return len(f.sink.of(alerts.DeviceOffline)) > 0 })
	brokertest.WaitFor(t, 10*time.Second, "the other brokers' alerts counted as duplicates", func() bool { return f.duplicates() == 2 })
	time.Sleep(5 * after)
	if got := f.sink.of(alerts.DeviceOffline); len(got) != 1 || got[0].Device != "pump-1" {
		t.Fatalf("device_offline alerts: %+v; want one for pump-1", got)
	}
}

// A device flaps between three brokers (A, then B, then C), leaving each:
// no broker reports it offline while another holds it, and the one
// offline episode at the end is one alert.
func TestFleetFlappingDeviceAlertsOnce(t *testing.T) {
	e := brokertest.New(t)
	e.Stop()
	s := e.Enroll("pump-1")
	dev, err := e.DB.Device(context.Background(), "pump-1")
	if err != nil {
		t.Fatal(err)
	}
	ca := brokertest.NewLinkCA(t)
	f := newAlertingFleet(t)
	const after = 5 * time.Second // longer than a move between brokers takes, even on a loaded machine
	ids := []string{"broker-a", "broker-b", "broker-c"}
	for _, id := range ids {
		f.start(t, e, ca, id, after)
	}
	var lastStop time.Time
	for _, id := range ids {
		b := f.brokers[id]
		c := e.StartConnector(s, map[string]string{"echo": brokertest.EchoServer(t)}, func(cc *connector.Config) {
			cc.State.Endpoints = []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.ListenPort()).String()}
		})
		brokertest.WaitFor(t, 20*time.Second, id+" to hold pump-1", func() bool { return b.Serves(dev.ID) && b.Connected("pump-1") })
		time.Sleep(300 * time.Millisecond)
		c.Stop()
		lastStop = time.Now()
		if got := f.sink.of(alerts.DeviceOffline); len(got) > 0 {
			t.Fatalf("device_offline while the device was moving between brokers: %+v", got)
		}
	}
	brokertest.WaitFor(t, 20*time.Second, "a device_offline alert", func() bool { return len(f.sink.of(alerts.DeviceOffline)) > 0 })
	if since := time.Since(lastStop); since < after {
		t.Errorf("device_offline %s after the device last left; want no sooner than the %s threshold", since, after)
	}
	time.Sleep(after + time.Second) // every broker's timer has fired by now
	got := f.sink.of(alerts.DeviceOffline)
	if len(got) != 1 || got[0].Device != "pump-1" || got[0].Details["broker_id"] != "broker-c" {
		t.Fatalf("device_offline alerts: %+v; want one for pump-1, from broker-c (which saw it last)", got)
	}
}
