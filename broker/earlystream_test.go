package broker_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestSessionStreamEarly: bytes written to a stream before the connector
// has answered reach the service, ahead of and in order with those written
// after; they are counted on the session once the service was reached,
// and not at all when it was not (dial_failed, 0 bytes).
func TestSessionStreamEarly(t *testing.T) {
	env := newEchoDownEnv(t)
	u, m := env.user, env.m
	ctx := context.Background()
	ended := func(id string) *fieldpass.Session { return env.ended(t, id) }

	t.Run("reached", func(t *testing.T) {
		s, err := m.Open(ctx, &fieldpass.Caller{User: u}, "pump-1", "echo", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for i := range 20 {
			// Half of the early bytes go with the header, half after it.
			first := []byte(strings.Repeat("a", 1+i*100))
			st, err := s.StreamEarly(ctx, first[:len(first)/2])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write(first[len(first)/2:]); err != nil {
				t.Fatalf("write before the answer: %v", err)
			}
			if err := st.Answer(); err != nil {
				t.Fatalf("answer: %v", err)
			}
			rest := []byte(strings.Repeat("b", 7000))
			go func() {
				st.Write(rest)
				st.CloseWrite()
			}()
			got, err := io.ReadAll(st)
			if err != nil {
				t.Fatalf("read echo: %v", err)
			}
			if want := append(first, rest...); !bytes.Equal(got, want) {
				t.Fatalf("echo: %d bytes, want %d identical (early bytes first)", len(got), len(want))
			}
			st.Close()
			total += int64(len(first) + len(rest))
		}
		s.End(fieldpass.EndClientClosed)
		r := ended(s.ID())
		if r.EndReason != fieldpass.EndClientClosed || r.BytesIn != total || r.BytesOut != total {
			t.Fatalf("row: %s, in %d, out %d; want client_closed, %d each way", r.EndReason, r.BytesIn, r.BytesOut, total)
		}
	})

	t.Run("refused", func(t *testing.T) {
		s, err := m.Open(ctx, &fieldpass.Caller{User: u}, "pump-1", "down", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.StreamEarly(ctx, []byte("GET / HTTP/1.0\r\n\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Answer(); err == nil || !strings.Contains(err.Error(), "dial failed") {
			t.Fatalf("answer for a closed port: %v, want dial failed", err)
		}
		if _, err := st.Read(make([]byte, 1)); err == nil {
			t.Fatal("read from a refused stream succeeded")
		}
		st.Close()
		s.End(fieldpass.EndClientClosed)
		r := ended(s.ID())
		if r.EndReason != fieldpass.EndDialFailed || r.BytesIn != 0 || r.BytesOut != 0 {
			t.Fatalf("row: %s, bytes %d/%d; want dial_failed, 0/0", r.EndReason, r.BytesIn, r.BytesOut)
		}
	})

	t.Run("session ended", func(t *testing.T) {
		s, err := m.Open(ctx, &fieldpass.Caller{User: u}, "pump-1", "echo", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.StreamEarly(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte("x"))
		s.End(fieldpass.EndClientClosed)
		// Cut with the session, answered or not: nothing more comes.
		done := make(chan error, 1)
		go func() {
			_, err := io.ReadAll(st)
			done <- err
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("stream of an ended session still open after 5s")
		}
		if _, err := s.StreamEarly(ctx, nil); err == nil {
			t.Fatal("stream opened on an ended session")
		}
	})
}
