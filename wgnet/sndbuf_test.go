package wgnet_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/wgnet"
)

// TestSendBufferBound: on a 300 ms path, what a bulk sender keeps queued
// unsent is bounded in time (TCP_NOTSENT_LOWAT-like), not a whole window as
// gVisor's own sizing (twice the window) leaves it. As in the tunnel, where
// streams take turns writing frames to one connection, a second writer
// sends a small stamped record every 40 ms between the bulk writer's 16 KiB
// chunks, and the log shows how long those records took from the wish to
// write to the receiver's read: half the round trip plus what waited unsent
// in front of them.
func TestSendBufferBound(t *testing.T) {
	if testing.Short() {
		t.Skip("six seconds of a bulk transfer")
	}
	var p pair
	p.broker = MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr, ListenAddr: loopback})
	p.connector = MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: connectorAddr, ListenAddr: loopback, SmallDevice: true})
	defer p.Close()
	r := MustRelay(t, netip.AddrPortFrom(loopback.Addr(), p.broker.ListenPort()))
	MustSetPeer(t, p.broker, p.connectorPeer())
	bp := p.brokerPeer()
	bp.Endpoint = r.Addr()
	MustSetPeer(t, p.connector, bp)
	r.SetDelay(150*time.Millisecond, 0)
	p.MustHandshake(t)

	l, err := p.connector.ListenTCP(9)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// A record: a byte 1 for a stamped one (then the time of the wish to
	// write it), 0 for bulk.
	const record = 1024
	ages := make(chan []time.Duration, 1)
	go func() {
		var got []time.Duration
		defer func() { ages <- got }()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, record)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if buf[0] == 1 {
				got = append(got, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(buf[1:])))))
			}
		}
	}()
	c := MustDial(t, p.broker, netip.AddrPortFrom(connectorAddr, 9))
	var mu sync.Mutex // the writers take turns, as yamux's streams do
	write := func(b []byte) error {
		mu.Lock()
		defer mu.Unlock()
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Write(b)
		return err
	}
	start := time.Now()
	stop := make(chan struct{})
	stamped := make(chan error, 1)
	go func() {
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		b := make([]byte, record)
		b[0] = 1
		for {
			select {
			case <-stop:
				stamped <- nil
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(b[1:], uint64(time.Now().UnixNano()))
			if err := write(b); err != nil {
				stamped <- err
				return
			}
		}
	}()
	var ratios []float64
	var last wgnet.SendBuffer
	bulk := make([]byte, 16*record)
	for next := start.Add(3 * time.Second); time.Since(start) < 8*time.Second; {
		if err := write(bulk); err != nil {
			t.Fatal(err)
		}
		// Past slow start, sample the sender's buffer beside its window.
		if now := time.Now(); now.After(next) {
			next = now.Add(50 * time.Millisecond)
			for _, sb := range wgnet.SendBuffers(p.broker) {
				ratios = append(ratios, float64(sb.Size)/float64(sb.Window))
				last = sb
			}
		}
	}
	close(stop)
	if err := <-stamped; err != nil {
		t.Fatal(err)
	}
	c.Close()
	got := <-ages
	if len(ratios) == 0 || len(got) < 10 {
		t.Fatalf("too few samples: %d of the buffer, %d records", len(ratios), len(got))
	}
	slices.Sort(ratios)
	tail := got[len(got)/2:] // past slow start
	slices.Sort(tail)
	t.Logf("send buffer / window: median %.2f, max %.2f (last: %d / %d bytes, srtt %v); a record's wait from the wish to write to the read, past slow start: p50 %v p99 %v (n=%d)",
		ratios[len(ratios)/2], ratios[len(ratios)-1], last.Size, last.Window, last.RTT.Round(time.Millisecond),
		tail[len(tail)/2].Round(time.Millisecond), tail[len(tail)*99/100].Round(time.Millisecond), len(tail))
	// gVisor sizes it twice the window; the bound is the window plus
	// 50 ms of data, a sixth of it at this round trip.
	if m := ratios[len(ratios)/2]; m > 1.5 {
		t.Errorf("send buffer median %.2f times the window, want at most 1.5 (the window plus 50 ms of data)", m)
	}
}

// TestWriteDeadline: a write blocked by a receiver that reads nothing ends
// at its deadline with a timeout, and a closed listener's Accept returns.
func TestWriteDeadline(t *testing.T) {
	p := NewPair(t, wgnet.Config{})
	defer p.Close()
	p.MustHandshake(t)
	l, err := p.connector.ListenTCP(9)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c // and never read from
	}()
	c := MustDial(t, p.broker, netip.AddrPortFrom(connectorAddr, 9))
	if sc := <-accepted; sc != nil {
		defer sc.Close()
	}
	c.SetWriteDeadline(time.Now().Add(time.Second))
	n, err := c.Write(make([]byte, 64<<20))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("write of 64 MiB to a receiver that reads nothing: %d bytes, error %v; want a timeout", n, err)
	}
	if n == 0 || n >= 64<<20 {
		t.Errorf("wrote %d bytes before the deadline, want some but not all", n)
	}

	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return within 5 s of Close")
	}
}
