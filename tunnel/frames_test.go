package tunnel_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass/tunnel"
)

// guardedPair is a yamux session whose opener reads through
// RefuseStreamOpens (and writes through CoalesceFrames, as the broker
// does) and its peer, over a real TCP connection on loopback.
func guardedPair(t *testing.T) (opener, peer *yamux.Session, refused *atomic.Int32, raw net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	refused = &atomic.Int32{}
	g := tunnel.RefuseStreamOpens(a, func() { refused.Add(1) })
	if _, ok := tunnel.CoalesceFrames(g, 0).(net.Conn); !ok {
		t.Fatal("CoalesceFrames of a net.Conn is no longer one")
	}
	opener, err = yamux.Client(tunnel.CoalesceFrames(g, tunnel.OpenHold), tunnel.YamuxConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	peer, err = yamux.Server(tunnel.CoalesceFrames(b, tunnel.OpenHold), tunnel.YamuxConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { opener.Close(); peer.Close(); a.Close(); b.Close() })
	return opener, peer, refused, b
}

// TestRefuseStreamOpensPassesTraffic: the opener's streams, many at once
// and with bodies large and small, pass through the guard intact, and it
// refuses nothing.
func TestRefuseStreamOpensPassesTraffic(t *testing.T) {
	opener, peer, refused, _ := guardedPair(t)
	go func() {
		for {
			st, err := peer.AcceptStream()
			if err != nil {
				return
			}
			go func() { io.Copy(st, st); st.Close() }()
		}
	}()
	errc := make(chan error, 50)
	for i := range 50 {
		go func() {
			st, err := opener.OpenStream()
			if err != nil {
				errc <- err
				return
			}
			want := bytes.Repeat([]byte{byte(i)}, 1+i*7919) // up to ~390 KB: past the initial window
			go func() { st.Write(want); st.Close() }()
			got, err := io.ReadAll(st)
			if err == nil && !bytes.Equal(got, want) {
				err = errors.New("echo differs")
			}
			errc <- err
		}()
	}
	for range 50 {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("streams did not finish in 20s")
		}
	}
	if opener.IsClosed() || refused.Load() != 0 {
		t.Fatalf("session closed %v, refusals %d; want open, 0", opener.IsClosed(), refused.Load())
	}
}

// TestRefuseStreamOpensEndsSession: a stream the peer opens ends the
// opener's session before it is accepted, whatever the peer writes into it,
// and the refusal is reported once.
func TestRefuseStreamOpensEndsSession(t *testing.T) {
	opener, peer, refused, _ := guardedPair(t)
	// Some ordinary traffic first, so the guard is mid-stream.
	go func() {
		st, err := peer.AcceptStream()
		if err == nil {
			io.Copy(st, st)
			st.Close()
		}
	}()
	st, err := opener.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.Write(bytes.Repeat([]byte("y"), 100000))
	if _, err := io.ReadFull(st, make([]byte, 100000)); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := opener.AcceptStream()
		accepted <- err
	}()
	rogue, err := peer.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	rogue.SetWriteDeadline(time.Now().Add(time.Second))
	rogue.Write(bytes.Repeat([]byte("x"), 64<<10))
	select {
	case <-opener.CloseChan():
	case <-time.After(5 * time.Second):
		t.Fatal("opener's session still open 5s after the peer opened a stream")
	}
	if err := <-accepted; err == nil {
		t.Fatal("the opener accepted the peer's stream")
	}
	if n := refused.Load(); n != 1 {
		t.Fatalf("refusal reported %d times, want 1", n)
	}
}

// recorder keeps each write it is given.
type recorder struct {
	mu  sync.Mutex
	got [][]byte
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, append([]byte(nil), p...))
	return len(p), nil
}
func (r *recorder) Read(p []byte) (int, error) { return 0, io.EOF }
func (r *recorder) Close() error               { return nil }

func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []int
	for _, g := range r.got {
		s = append(s, len(g))
	}
	return s
}

// frame is a yamux frame header: type, flags, stream 1, length.
func frame(typ byte, flags uint16, length uint32) []byte {
	h := make([]byte, 12)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], 1)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// TestCoalesceFramesHolds: with a hold, a stream's opening (SYN) or
// acceptance (ACK) leaves with the frame after it, or alone once the hold
// has passed; other window updates and large bodies are not held.
func TestCoalesceFramesHolds(t *testing.T) {
	const syn, ack, fin = 1, 2, 4
	big := make([]byte, 20000)
	for _, tc := range []struct {
		name   string
		writes [][]byte
		want   []int
	}{
		{"open, then header: one write", [][]byte{frame(1, syn, 1<<20), frame(0, 0, 30), make([]byte, 30)}, []int{54}},
		{"accept, then answer: one write", [][]byte{frame(1, ack, 1<<20), frame(0, 0, 4), make([]byte, 4)}, []int{28}},
		{"accept, then FIN", [][]byte{frame(1, ack, 0), frame(1, fin, 0)}, []int{24}},
		{"opens, then a large body", [][]byte{frame(1, syn, 0), frame(1, syn, 0), frame(0, 0, 20000), big}, []int{36, 20000}},
		{"window update: as is", [][]byte{frame(1, 0, 1<<20)}, []int{12}},
		{"open alone: after the hold", [][]byte{frame(1, syn, 1<<20)}, []int{12}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			c := tunnel.CoalesceFrames(r, 20*time.Millisecond)
			for _, p := range tc.writes {
				if n, err := c.Write(p); n != len(p) || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
				}
			}
			deadline := time.Now().Add(2 * time.Second)
			for sum(r.sizes()) < len(bytes.Join(tc.writes, nil)) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := r.sizes(); !slices.Equal(got, tc.want) {
				t.Fatalf("writes of %v bytes, want %v", got, tc.want)
			}
			r.mu.Lock()
			all := bytes.Join(r.got, nil)
			r.mu.Unlock()
			if !bytes.Equal(all, bytes.Join(tc.writes, nil)) {
				t.Fatal("bytes on the connection differ from those written")
			}
		})
	}
}

func sum(s []int) (n int) {
	for _, v := range s {
		n += v
	}
	return n
}
