package wgnet

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// TestAddrBindBatches sends batches of datagrams, in runs of equal and of
// mixed sizes, from one addrBind to another and checks that each arrives
// once, whole and in order, whether or not the kernel offers UDP GSO/GRO
// (and with GSO switched off, as after the kernel refused it).
func TestAddrBindBatches(t *testing.T) {
	for _, gso := range []bool{true, false} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			lo := netip.MustParseAddr("127.0.0.1")
			from, to := newAddrBind(lo, conn.IdealBatchSize), newAddrBind(lo, conn.IdealBatchSize)
			_, _, err := from.Open(0)
			if err != nil {
				t.Fatal(err)
			}
			defer from.Close()
			fns, port, err := to.Open(0)
			if err != nil {
				t.Fatal(err)
			}
			defer to.Close()
			if !gso {
				from.tx.Store(false)
			}
			ep, err := from.ParseEndpoint(netip.AddrPortFrom(lo, port).String())
			if err != nil {
				t.Fatal(err)
			}

			// 300 datagrams: runs of 1312-byte ones (more than one GSO
			// message holds), short ones that end a run, a lone larger one.
			var want [][]byte
			for i := range 300 {
				size := 1312
				switch {
				case i%97 == 50:
					size = 200
				case i%97 == 60:
					size = 1400
				case i == 299:
					size = 33
				}
				b := make([]byte, size, device.MaxMessageSize)
				for j := range b {
					b[j] = byte(i + j)
				}
				want = append(want, b)
			}
			// Send everything before receiving anything, so that one read
			// finds several GSO trains: more datagrams than a batch holds.
			for rest := want; len(rest) > 0; {
				batch := rest[:min(len(rest), conn.IdealBatchSize)]
				rest = rest[len(batch):]
				if err := from.Send(batch, ep); err != nil {
					t.Fatal(err)
				}
			}
			var got [][]byte
			bufs := make([][]byte, conn.IdealBatchSize)
			for i := range bufs {
				bufs[i] = make([]byte, device.MaxMessageSize)
			}
			sizes := make([]int, len(bufs))
			eps := make([]conn.Endpoint, len(bufs))
			deadline := time.Now().Add(5 * time.Second)
			calls := 0
			for len(got) < len(want) {
				if time.Now().After(deadline) {
					t.Fatalf("got %d of %d datagrams", len(got), len(want))
				}
				n, err := fns[0](bufs, sizes, eps)
				if err != nil {
					t.Fatal(err)
				}
				calls++
				for i := range n {
					if eps[i].DstToString() != from.conn.LocalAddr().String() {
						t.Fatalf("datagram from %s, want %s", eps[i].DstToString(), from.conn.LocalAddr())
					}
					got = append(got, bytes.Clone(bufs[i][:sizes[i]]))
				}
			}
			t.Logf("%d datagrams in %d receive calls", len(want), calls)
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("datagram %d: got %d bytes, want %d (or different content)", i, len(got[i]), len(want[i]))
				}
			}
		})
	}
}
