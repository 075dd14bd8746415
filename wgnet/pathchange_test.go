package wgnet_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/wgnet"
)

// BenchmarkPathChange shows what becomes of one long-lived TCP connection
// through the tunnel (the broker->connector yamux carrier) when the path's
// round-trip time grows after the connection was set up, as on a cellular
// link, beside a connection set up on the slow path. Each case moves
// FIELDPASS_BENCH_MIB (default 4) MiB broker->connector three times after
// the path changed, and logs each transfer's MiB/s and the sender's gVisor
// TCP counters (timeouts, retransmits, spurious recoveries) and RTT
// estimate, so that a collapse shows its cause. Minutes of wall time: run
// only with FIELDPASS_BENCH=1, once:
//
//	FIELDPASS_BENCH=1 go test -run '^$' -bench PathChange -benchtime 1x ./wgnet/
func BenchmarkPathChange(b *testing.B) {
	if os.Getenv("FIELDPASS_BENCH") != "1" {
		b.Skip("takes minutes; set FIELDPASS_BENCH=1")
	}
	mib := 4
	if s := os.Getenv("FIELDPASS_BENCH_MIB"); s != "" {
		var err error
		if mib, err = strconv.Atoi(s); err != nil {
			b.Fatalf("FIELDPASS_BENCH_MIB: %v", err)
		}
	}
	for _, tc := range []struct {
		name   string
		rtt    time.Duration
		loss   float64
		before bool // the path is slow from the start
	}{
		{"rtt100/before", 100 * time.Millisecond, 0, true},
		{"rtt100/raised", 100 * time.Millisecond, 0, false},
		{"rtt300/before", 300 * time.Millisecond, 0, true},
		{"rtt300/raised", 300 * time.Millisecond, 0, false},
		{"rtt100-loss2/before", 100 * time.Millisecond, 0.02, true},
		{"rtt100-loss2/raised", 100 * time.Millisecond, 0.02, false},
		// The field benchmark's carrier at 5 % loss each way: a short
		// path, where the kernel's TCP keeps the link full.
		{"rtt10-loss5/before", 10 * time.Millisecond, 0.05, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			size := mib << 20
			if tc.loss > 0 {
				size /= 4 // lossy transfers are slow whatever the stack does
			}
			for range b.N {
				pathChange(b, size, tc.rtt, tc.loss, tc.before)
			}
		})
	}
}

func pathChange(b *testing.B, size int, rtt time.Duration, loss float64, before bool) {
	var p pair
	p.broker = MustNew(b, wgnet.Config{PrivateKey: MustKey(b), Address: brokerAddr, ListenAddr: loopback})
	p.connector = MustNew(b, wgnet.Config{PrivateKey: MustKey(b), Address: connectorAddr, ListenAddr: loopback})
	defer p.Close()
	// The connector reaches the broker through a relay: a cellular path,
	// whose round-trip time swings from tens to hundreds of milliseconds
	// while one TCP connection lives on.
	r := MustRelay(b, netip.AddrPortFrom(loopback.Addr(), p.broker.ListenPort()))
	MustSetPeer(b, p.broker, p.connectorPeer())
	bp := p.brokerPeer()
	bp.Endpoint = r.Addr()
	MustSetPeer(b, p.connector, bp)
	slow := func() {
		r.SetDelay(rtt/2, 0)
		r.SetLoss(loss)
	}
	// Loss comes after WireGuard's handshake, whose retry takes 5 s.
	if before {
		r.SetDelay(rtt/2, 0)
	} else {
		r.SetDelay(time.Millisecond, 0)
	}
	p.MustHandshake(b)
	if before {
		slow()
	}

	// The connector accepts one connection and, for each transfer, reads
	// its length, then its bytes, and answers one byte.
	l, err := p.connector.ListenTCP(9)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	sinkErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			sinkErr <- err
			return
		}
		defer c.Close()
		var n [8]byte
		for {
			if _, err := io.ReadFull(c, n[:]); err != nil {
				sinkErr <- err
				return
			}
			if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint64(n[:]))); err != nil {
				sinkErr <- err
				return
			}
			if _, err := c.Write([]byte{1}); err != nil {
				sinkErr <- err
				return
			}
		}
	}()
	c := MustDial(b, p.broker, netip.AddrPortFrom(connectorAddr, 9))
	buf := make([]byte, 8+size)
	transfer := func(size int) float64 {
		c.SetDeadline(time.Now().Add(3 * time.Minute))
		start := time.Now()
		binary.BigEndian.PutUint64(buf, uint64(size))
		if _, err := c.Write(buf[:8+size]); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:1]); err != nil {
			select {
			case err := <-sinkErr:
				b.Fatalf("sink: %v", err)
			default:
			}
			b.Fatal(err)
		}
		return float64(size) / (1 << 20) / time.Since(start).Seconds()
	}
	stats := wgnet.TCPStats(p.broker)
	counters := func() string {
		return fmt.Sprintf("timeouts %d retransmits %d fast-retransmits %d spurious %d (rto %d) dsack %d fast-recovery %d sack-recovery %d tlp %d %v",
			stats.Timeouts.Value(), stats.Retransmits.Value(), stats.FastRetransmit.Value(),
			stats.SpuriousRecovery.Value(), stats.SpuriousRTORecovery.Value(), stats.SegmentsAckedWithDSACK.Value(),
			stats.FastRecovery.Value(), stats.SACKRecovery.Value(), stats.TLPRecovery.Value(), wgnet.TCPInfo(p.broker))
	}

	// The carrier's connection is set up and exchanges a little (hello,
	// a short session) on the path as it was then.
	first := transfer(64 << 10)
	b.Logf("set up at %s, 64 KiB exchanged: %.2f MiB/s; %s", map[bool]string{true: "the slow path", false: "1 ms each way"}[before], first, counters())
	if !before {
		slow()
	}
	var rates []float64
	for i := range 3 {
		rate := transfer(size)
		rates = append(rates, rate)
		b.Logf("transfer %d at %v RTT, loss %.0f%%: %.2f MiB/s; %s", i+1, rtt, loss*100, rate, counters())
	}
	if n := r.Counters().Overflowed; n > 0 {
		b.Logf("the relay dropped %d packets for want of queue", n)
	}
	b.ReportMetric(rates[0], "MiB/s-1st")
	b.ReportMetric(rates[2], "MiB/s-3rd")
	b.ReportMetric(float64(stats.Timeouts.Value()), "timeouts")
}
