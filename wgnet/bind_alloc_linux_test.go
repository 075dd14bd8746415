package wgnet

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// groControl is the control message the kernel attaches to a UDP_GRO read
// of datagrams of size bytes each.
func groControl(size uint16) []byte {
	c := make([]byte, unix.CmsgSpace(gsoDataSize))
	hdr := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	hdr.Level = unix.SOL_UDP
	hdr.Type = unix.UDP_GRO
	hdr.SetLen(unix.CmsgLen(gsoDataSize))
	binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], size)
	return c
}

// TestSplitAllocs: a small device's batch (16) receiving GRO trains of 45
// datagrams, each read split into the batch and the rest stashed, then
// returned over the next calls, allocates nothing once warm. Before, each
// train's overflow grew a fresh stash, which was most of the connector's
// allocation under a download.
func TestSplitAllocs(t *testing.T) {
	const (
		batch = smallBatchSize
		size  = 1440
		segs  = 45 // what loopback coalesces into one 64 KiB read
	)
	train := make([]byte, size*segs)
	for i := range train {
		train[i] = byte(i/size + i)
	}
	control := groControl(size)
	from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 51820}

	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, device.MaxMessageSize)
	}
	sizes := make([]int, batch)
	eps := make([]conn.Endpoint, batch)
	ms := make([]ipv6.Message, batch)
	st := &receiveState{rx: true}
	var got [][]byte
	check := len(train) // bytes to compare on the first run only

	// One read as receiveBatch makes it after a coalesced one: a single
	// message, into the last buffer; then the stash drained.
	read := func() {
		for i := range ms {
			ms[i].Buffers = bufs[i : i+1 : i+1]
			ms[i].OOB = append(ms[i].OOB[:0], control...)
		}
		readAt := batch - 1
		m := &ms[readAt]
		m.N = copy(m.Buffers[0], train)
		m.NN = len(control)
		m.Addr = from
		n, err := st.split(ms, readAt, 1)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if check > 0 {
				got = append(got, bytes.Clone(bufs[i][:ms[i].N]))
			}
		}
		for len(st.stashSizes) > 0 {
			n := st.unstash(bufs, sizes, eps)
			for i := range n {
				if eps[i] == nil {
					t.Fatal("datagram without a source")
				}
				if check > 0 {
					if got := eps[i].DstToString(); got != "127.0.0.1:51820" {
						t.Fatalf("datagram from %s, want 127.0.0.1:51820", got)
					}
					got = append(got, bytes.Clone(bufs[i][:sizes[i]]))
				}
			}
		}
		check = 0
		resetMessages(ms)
	}
	read()
	if len(got) != segs {
		t.Fatalf("got %d datagrams, want %d", len(got), segs)
	}
	for i, g := range got {
		if want := train[i*size : (i+1)*size]; !bytes.Equal(g, want) {
			t.Fatalf("datagram %d differs", i)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	allocs := testing.AllocsPerRun(100, read)
	runtime.ReadMemStats(&after)
	// AllocsPerRun makes 101 runs.
	t.Logf("%v allocations, %d bytes per train", allocs, (after.TotalAlloc-before.TotalAlloc)/101)
	if allocs != 0 {
		t.Errorf("split and unstash of a %d-datagram train: %v allocations, want 0", segs, allocs)
	}
}

// BenchmarkAddrBindReceive sends 64 datagrams of 1440 bytes per op from one
// addrBind to another on loopback (GSO and GRO where the kernel has them)
// and receives them through a small device's batch of 16, reporting
// allocations per datagram on the receive path: x/net's ReadBatch
// allocates each message's source address; all else should not.
func BenchmarkAddrBindReceive(b *testing.B) {
	lo := netip.MustParseAddr("127.0.0.1")
	from, to := newAddrBind(lo, conn.IdealBatchSize), newAddrBind(lo, smallBatchSize)
	if _, _, err := from.Open(0); err != nil {
		b.Fatal(err)
	}
	defer from.Close()
	fns, port, err := to.Open(0)
	if err != nil {
		b.Fatal(err)
	}
	defer to.Close()
	ep, err := from.ParseEndpoint(netip.AddrPortFrom(lo, port).String())
	if err != nil {
		b.Fatal(err)
	}
	const per = 64
	out := make([][]byte, per)
	for i := range out {
		out[i] = make([]byte, 1440)
	}
	bufs := make([][]byte, smallBatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, device.MaxMessageSize)
	}
	sizes := make([]int, len(bufs))
	eps := make([]conn.Endpoint, len(bufs))
	b.SetBytes(per * 1440)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := from.Send(out, ep); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < per; {
			n, err := fns[0](bufs, sizes, eps)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}
