package broker_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
)

// echoByte sends one byte through st and reads it back, then closes st.
func echoByte(tb testing.TB, st tunnel.HalfCloser) {
	var b [1]byte
	if _, err := st.Write(b[:]); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(st, b[:]); err != nil {
		tb.Fatal(err)
	}
	st.CloseWrite()
	st.Close()
}

// BenchmarkSessionOpen measures what a recorded session costs over the
// bare stream of the tunnel core, in one run against one device:
//
//	bare:    broker.OpenStream + 1-byte echo (the tunnel core alone)
//	session: grant check + committed row and audit event + stream +
//	         1-byte echo + the end recorded (Sessions.Open ... End)
//	stream:  one more stream on a session already open (what
//	         fieldpass forward pays per connection)
//
// Compare ns/op across the sub-benchmarks of one run; opens/s is 1e9/ns.
func BenchmarkSessionOpen(b *testing.B) {
	se := newSessionEnv(b, nil)
	se.grant(time.Time{}, "echo")
	ctx := context.Background()

	b.Run("bare", func(b *testing.B) {
		for b.Loop() {
			st, err := se.Broker.OpenStream(ctx, "pump-1", "echo", newSessionID(b))
			if err != nil {
				b.Fatal(err)
			}
			echoByte(b, st)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "opens/s")
	})
	b.Run("session", func(b *testing.B) {
		for b.Loop() {
			s, err := se.m.Open(ctx, &fieldpass.Caller{User: se.user}, "pump-1", "echo", "127.0.0.1")
			if err != nil {
				b.Fatal(err)
			}
			st, err := s.Stream(ctx)
			if err != nil {
				b.Fatal(err)
			}
			echoByte(b, st)
			s.End(fieldpass.EndClientClosed)
		}
		// Ends are written in the background: count them in.
		for se.m.Pending() > 0 {
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "opens/s")
	})
	b.Run("stream", func(b *testing.B) {
		s, err := se.m.Open(ctx, &fieldpass.Caller{User: se.user}, "pump-1", "echo", "127.0.0.1")
		if err != nil {
			b.Fatal(err)
		}
		defer s.End(fieldpass.EndClientClosed)
		for b.Loop() {
			st, err := s.Stream(ctx)
			if err != nil {
				b.Fatal(err)
			}
			echoByte(b, st)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "opens/s")
	})
}
