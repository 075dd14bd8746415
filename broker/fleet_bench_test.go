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

// BenchmarkFleetStream measures what carrying a person's connect to the
// broker holding the device costs, against the holder serving it itself,
// in one run: a new stream with a 1-byte echo (open), and 4 MiB sent
// through one stream to the device's echo service and read back (MB/s
// counts the 4 MiB each way once).
//
//	holder:  the session opened at broker B, which holds the device
//	relayed: the session opened at broker A, carried to B over brokerlink
func BenchmarkFleetStream(b *testing.B) {
	e := brokertest.New(b)
	e.Stop()
	ca := brokertest.NewLinkCA(b)
	fa := startFleetBroker(b, e, ca, "broker-a")
	fb := startFleetBroker(b, e, ca, "broker-b")
	ctx := context.Background()
	sink := brokertest.NewEcho(b)
	s := e.Enroll("pump-1")
	e.StartConnector(s, map[string]string{"echo": sink.Addr}, func(c *connector.Config) {
		c.State.Endpoints = []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), fb.b.ListenPort()).String()}
	})
	brokertest.WaitFor(b, 20*time.Second, "broker-b to serve pump-1", func() bool {
		d, err := e.DB.Device(ctx, "pump-1")
		return err == nil && fb.b.Serves(d.ID)
	})
	user, _ := engineerGranted(b, e, "pump-1", "echo")
	for _, c := range []struct {
		name string
		m    *broker.Sessions
	}{{"holder", fb.m}, {"relayed", fa.m}} {
		sess, err := c.m.Open(ctx, &fieldpass.Caller{User: user}, "pump-1", "echo", "127.0.0.1")
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name+"/open", func(b *testing.B) {
			for b.Loop() {
				st, err := sess.Stream(ctx)
				if err != nil {
					b.Fatal(err)
				}
				echoByte(b, st)
			}
		})
		b.Run(c.name+"/throughput", func(b *testing.B) {
			const size = 4 << 20
			buf := make([]byte, 64<<10)
			b.SetBytes(size)
			for b.Loop() {
				st, err := sess.Stream(ctx)
				if err != nil {
					b.Fatal(err)
				}
				done := make(chan error, 1)
				go func() { _, err := io.Copy(io.Discard, st); done <- err }()
				for sent := 0; sent < size; sent += len(buf) {
					if _, err := st.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				st.CloseWrite()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				st.Close()
			}
		})
		sess.End(fieldpass.EndClientClosed)
	}
}
