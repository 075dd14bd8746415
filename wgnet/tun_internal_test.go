package wgnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// TestNetTunSegmentation joins two netTuns back to back, with no WireGuard
// in between, and moves a few MB each way over TCP. Every packet between
// them must fit the MTU and carry valid IP and TCP checksums, although the
// stacks themselves never check them (CapabilityRXChecksumOffload): a
// kernel stack at the other end of a tunnel would. That covers cutting up
// gVisor's large segments in Read (gso.go), across Read calls too, and
// coalescing them again in Write.
func TestNetTunSegmentation(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b netip.Addr
		mtu  int
	}{
		{"IPv4", netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2"), DefaultMTU},
		{"IPv4 MTU 1420", netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2"), 1420},
		{"IPv6", netip.MustParseAddr("fd09::1"), netip.MustParseAddr("fd09::2"), DefaultMTU},
	} {
		t.Run(tc.name, func(t *testing.T) {
			newTun := func(addr netip.Addr) *netTun {
				tun, err := newNetTun(stackConfig{addr: addr, mtu: tc.mtu, sendBuffer: DefaultTCPBuffer,
					receiveBuffer: DefaultTCPBuffer, defaultTCPSize: defaultTCPInitialBuffer})
				if err != nil {
					t.Fatal(err)
				}
				return tun
			}
			a, b := newTun(tc.a), newTun(tc.b)
			var packets, large atomic.Int64
			var bad atomic.Value
			var wg sync.WaitGroup
			wire := func(from, to *netTun, batch int) {
				defer wg.Done()
				const offset = 16 // as wireguard-go's MessageTransportHeaderSize
				bufs := make([][]byte, batch)
				for i := range bufs {
					bufs[i] = make([]byte, device.MaxMessageSize)
				}
				sizes := make([]int, batch)
				for {
					n, err := from.Read(bufs, sizes, offset)
					if err != nil {
						return
					}
					out := make([][]byte, n)
					for i := range n {
						p := bufs[i][offset : offset+sizes[i]]
						packets.Add(1)
						if err := checkPacket(p, tc.mtu); err != nil {
							bad.CompareAndSwap(nil, err)
						}
						if len(p) > tc.mtu*3/4 {
							large.Add(1)
						}
						out[i] = bufs[i][:offset+sizes[i]]
					}
					to.Write(out, offset)
				}
			}
			wg.Add(2)
			// Unequal, small batches: large segments span several Reads.
			go wire(a, b, 7)
			go wire(b, a, conn.IdealBatchSize)
			defer func() {
				a.Close()
				b.Close()
				wg.Wait()
			}()

			proto := ipv4.ProtocolNumber
			if tc.a.Is6() {
				proto = ipv6.ProtocolNumber
			}
			full := func(addr netip.Addr, port uint16) tcpip.FullAddress {
				return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(addr.AsSlice()), Port: port}
			}
			l, err := gonet.ListenTCP(b.stack, full(tc.b, 80), proto)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			data := make([]byte, 4<<20)
			rand.Read(data)
			errc := make(chan error, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					errc <- err
					return
				}
				defer c.Close()
				// Echo: the data crosses both ways.
				_, err = io.Copy(c, io.LimitReader(c, int64(len(data))))
				errc <- err
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := gonet.DialContextTCP(ctx, a.stack, full(tc.b, 80), proto)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			go c.Write(data)
			got := make([]byte, len(data))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("data came back different")
			}
			if err, _ := bad.Load().(error); err != nil {
				t.Fatal(err)
			}
			if large.Load() < int64(2*len(data)/tc.mtu/2) {
				t.Fatalf("only %d of %d packets near the MTU", large.Load(), packets.Load())
			}
			t.Logf("%d packets", packets.Load())
		})
	}
}

// checkPacket checks an IP packet's length fields and checksums.
func checkPacket(p []byte, mtu int) error {
	if len(p) > mtu {
		return fmt.Errorf("%d-byte packet exceeds MTU %d", len(p), mtu)
	}
	var src, dst tcpip.Address
	var payload []byte
	var proto uint8
	switch p[0] >> 4 {
	case 4:
		h := header.IPv4(p)
		if !h.IsValid(len(p)) || int(h.TotalLength()) != len(p) {
			return fmt.Errorf("bad IPv4 header % x", p[:20])
		}
		if !h.IsChecksumValid() {
			return fmt.Errorf("bad IPv4 header checksum % x", p[:20])
		}
		src, dst, payload, proto = h.SourceAddress(), h.DestinationAddress(), h.Payload(), h.Protocol()
	case 6:
		h := header.IPv6(p)
		if !h.IsValid(len(p)) || int(h.PayloadLength())+header.IPv6MinimumSize != len(p) {
			return fmt.Errorf("bad IPv6 header % x", p[:40])
		}
		src, dst, payload, proto = h.SourceAddress(), h.DestinationAddress(), h.Payload(), h.NextHeader()
	default:
		return fmt.Errorf("not IP: % x", p[:1])
	}
	if proto != uint8(header.TCPProtocolNumber) {
		return nil
	}
	tcp := header.TCP(payload)
	if len(tcp) < header.TCPMinimumSize {
		return fmt.Errorf("short TCP header")
	}
	if !tcp.IsChecksumValid(src, dst, checksum.Checksum(tcp[tcp.DataOffset():], 0), uint16(len(tcp)-int(tcp.DataOffset()))) {
		return fmt.Errorf("bad TCP checksum in %d-byte segment, seq %d, flags %s",
			len(tcp), tcp.SequenceNumber(), tcp.Flags())
	}
	return nil
}
