package wgnet_test

import (
	"bufio"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/wgnet"
)

// TestOutageRecovers: a stream through the tunnel carries on after every
// packet of its flight was lost to a 2 s outage. With gVisor's RACK on (and
// SACK), each ping written re-scheduled the tail loss probe, which stopped
// the retransmission timer, and after the one probe the timer was re-armed
// a full RTO from then, so it never fired while pings went on every 20 ms:
// the stream stalled for good (see configure in tun.go).
func TestOutageRecovers(t *testing.T) {
	var p pair
	p.broker = MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr, ListenAddr: loopback})
	p.connector = MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: connectorAddr, ListenAddr: loopback})
	defer p.Close()
	// The connector reaches the broker through a relay, whose blackout is
	// the outage: a roam, a dead cell, a carrier NAT that forgot the mapping.
	r := MustRelay(t, netip.AddrPortFrom(loopback.Addr(), p.broker.ListenPort()))
	MustSetPeer(t, p.broker, p.connectorPeer())
	bp := p.brokerPeer()
	bp.Endpoint = r.Addr()
	MustSetPeer(t, p.connector, bp)
	p.MustHandshake(t)
	MustListenEcho(t, p.connector, 7)
	c := MustDial(t, p.broker, netip.AddrPortFrom(connectorAddr, 7))

	var got atomic.Int64
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(c)
		for n := 0; sc.Scan(); n++ {
			if want := fmt.Sprintf("ping %06d", n); sc.Text() != want {
				readErr <- fmt.Errorf("answer %d: got %q, want %q", n, sc.Text(), want)
				return
			}
			got.Add(1)
		}
		readErr <- sc.Err()
	}()
	const outage = 2 * time.Second
	var sent int64
	var down bool
	var restored time.Time
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for {
		<-tick.C
		if _, err := fmt.Fprintf(c, "ping %06d\n", sent); err != nil {
			t.Fatal(err)
		}
		sent++
		el := time.Since(start)
		switch {
		case el > time.Second && el < time.Second+outage:
			down = true
			r.SetBlackout(true)
		case down:
			down = false
			r.SetBlackout(false)
			restored = time.Now()
		}
		select {
		case err := <-readErr:
			t.Fatalf("echo: %v", err)
		default:
		}
		// Recovered: every ping but the one just sent has its answer.
		if !restored.IsZero() && got.Load() >= sent-1 {
			break
		}
		if el > 40*time.Second {
			t.Fatalf("%s after a %s outage ended: %d of %d pings answered; the stream stalled", time.Since(restored).Round(time.Millisecond), outage, got.Load(), sent)
		}
	}
	t.Logf("all %d pings answered %s after a %s outage ended (retransmission timer backoff)", sent, time.Since(restored).Round(time.Millisecond), outage)
}
