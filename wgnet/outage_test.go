package wgnet_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/wgnet"
)

// outageRelay passes UDP between a connector (which sends to its address)
// and the broker, and drops everything both ways while down is set: a
// roam, a dead cell, a carrier NAT that forgot the mapping.
type outageRelay struct {
	ln, up *net.UDPConn
	down   atomic.Bool
	client atomic.Pointer[net.UDPAddr]
}

func newOutageRelay(t *testing.T, broker netip.AddrPort) *outageRelay {
	t.Helper()
	ln, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(broker))
	if err != nil {
		t.Fatal(err)
	}
	r := &outageRelay{ln: ln, up: up}
	t.Cleanup(func() { ln.Close(); up.Close() })
	go func() {
		b := make([]byte, 65536)
		for {
			n, a, err := ln.ReadFromUDP(b)
			if err != nil {
				return
			}
			r.client.Store(a)
			if !r.down.Load() {
				up.Write(b[:n])
			}
		}
	}()
	go func() {
		b := make([]byte, 65536)
		for {
			n, err := up.Read(b)
			if err != nil {
				return
			}
			if a := r.client.Load(); a != nil && !r.down.Load() {
				ln.WriteToUDP(b[:n], a)
			}
		}
	}()
	return r
}

// TestOutageRecovers: a stream through the tunnel carries on after every
// packet of its flight was lost to a 2 s outage. gVisor's RACK (with SACK
// on) used to send one tail loss probe and never arm its retransmission
// timer, so such a stream stalled for good.
func TestOutageRecovers(t *testing.T) {
	var p pair
	p.broker = MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr, ListenAddr: loopback})
	p.connector = MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: connectorAddr, ListenAddr: loopback})
	defer p.Close()
	r := newOutageRelay(t, netip.AddrPortFrom(loopback.Addr(), p.broker.ListenPort()))
	MustSetPeer(t, p.broker, p.connectorPeer())
	bp := p.brokerPeer()
	bp.Endpoint = r.ln.LocalAddr().(*net.UDPAddr).AddrPort()
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
			r.down.Store(true)
		case r.down.Load():
			r.down.Store(false)
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
