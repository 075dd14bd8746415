package wgnet

// TCP segmentation offload for netTun: gVisor's TCP sender hands the link
// endpoint one large segment (up to gsoMaxSize) instead of one per MSS, with
// the TCP checksum left partial (the pseudo-header's sum, as for a NIC with
// checksum offload), and netTun.Read cuts it into MTU-sized packets. That
// saves gVisor its per-segment send path (segment bookkeeping, header
// building, routing, queueing), which was the largest single cost of a
// sending gVisor TCP. The splitting follows wireguard-go's tun.gsoSplit
// (tun/offload_linux.go, golang.zx2c4.com/wireguard, MIT, Copyright (C)
// 2017-2025 WireGuard LLC), but reads straight from the PacketBuffer's views.

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// gsoMaxSize is the largest segment gVisor's TCP hands netTun: 64 KiB, like
// a Linux NIC's, rather than channel.Endpoint's 32 KiB.
const gsoMaxSize = 1 << 16

// gsoEndpoint is a channel.Endpoint that asks for TCP segmentation offload.
type gsoEndpoint struct {
	*channel.Endpoint
}

func (gsoEndpoint) GSOMaxSize() uint32               { return gsoMaxSize }
func (gsoEndpoint) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

// viewReader reads a PacketBuffer's bytes in order, from its views.
type viewReader struct {
	v   *buffer.View
	off int // bytes of v already read
}

func newViewReader(pkt *stack.PacketBuffer) viewReader {
	views, skip := pkt.AsViewList()
	r := viewReader{v: views.Front()}
	r.skip(skip)
	return r
}

// skip passes over n bytes.
func (r *viewReader) skip(n int) {
	for r.v != nil && n > 0 {
		c := min(n, r.v.Size()-r.off)
		r.off += c
		n -= c
		if r.off == r.v.Size() {
			r.v, r.off = r.v.Next(), 0
		}
	}
}

// read fills dst as far as the packet goes and returns the bytes copied.
func (r *viewReader) read(dst []byte) int {
	n := 0
	for r.v != nil && n < len(dst) {
		c := copy(dst[n:], r.v.AsSlice()[r.off:])
		n += c
		r.off += c
		if r.off == r.v.Size() {
			r.v, r.off = r.v.Next(), 0
		}
	}
	return n
}

// segmenter cuts one large TCP segment from gVisor into MSS-sized packets,
// across as many Read calls as it takes. Only Read uses it.
type segmenter struct {
	pkt     *stack.PacketBuffer // nil when idle; holds a reference
	r       viewReader          // at the next segment's payload
	hdr     [header.IPv6MinimumSize + header.TCPHeaderMaximumSize + 8]byte
	ipLen   int    // bytes of IP header in hdr
	hdrLen  int    // bytes of IP and TCP header in hdr
	mss     int    // payload bytes per packet
	left    int    // payload bytes not yet handed out
	i       int    // index of the next packet
	seq     uint32 // sequence number of the first packet
	v6      bool
	initial uint16 // checksum of the pseudo-header's addresses and protocol
}

// needsSplit reports whether pkt is a segment that Read must cut up.
func needsSplit(pkt *stack.PacketBuffer) bool {
	g := pkt.GSOOptions
	return g.Type != stack.GSONone && g.MSS > 0 && pkt.Data().Size() > int(g.MSS)
}

// start takes pkt (and its reference) for splitting. It returns false, and
// releases pkt, if pkt is not a TCP segment it can split: gVisor only makes
// those, so that drops nothing real.
func (s *segmenter) start(pkt *stack.PacketBuffer) bool {
	ipLen := len(pkt.NetworkHeader().Slice())
	hdrLen := pkt.HeaderSize()
	tcpLen := hdrLen - ipLen
	if hdrLen > len(s.hdr) || tcpLen < header.TCPMinimumSize || ipLen < header.IPv4MinimumSize {
		pkt.DecRef()
		return false
	}
	*s = segmenter{pkt: pkt, r: newViewReader(pkt), ipLen: ipLen, hdrLen: hdrLen}
	s.r.read(s.hdr[:hdrLen])
	ip := s.hdr[:ipLen]
	switch ip[0] >> 4 {
	case 4:
		s.initial = checksum.Checksum(ip[12:20], uint16(header.TCPProtocolNumber))
	case 6:
		s.v6 = true
		s.initial = checksum.Checksum(ip[8:40], uint16(header.TCPProtocolNumber))
	default:
		s.release()
		return false
	}
	s.mss = int(pkt.GSOOptions.MSS)
	s.left = pkt.Data().Size()
	s.seq = binary.BigEndian.Uint32(s.hdr[ipLen+4:])
	return true
}

func (s *segmenter) active() bool { return s.pkt != nil }

func (s *segmenter) release() {
	s.pkt.DecRef()
	*s = segmenter{}
}

// next writes the next packets into bufs, as many as fit, and returns how
// many it wrote. The segmenter is idle again once it has written the last.
func (s *segmenter) next(bufs [][]byte, sizes []int, offset int) int {
	n := 0
	for ; n < len(bufs) && s.left > 0; n++ {
		payload := min(s.mss, s.left)
		total := s.hdrLen + payload
		out := bufs[n][offset:]
		if len(out) < total {
			// wireguard-go's buffers always fit an MTU-sized packet.
			s.release()
			return n
		}
		out = out[:total]
		copy(out, s.hdr[:s.hdrLen])
		s.r.read(out[s.hdrLen:])
		s.left -= payload

		ip, tcp := out[:s.ipLen], header.TCP(out[s.ipLen:])
		if s.v6 {
			binary.BigEndian.PutUint16(ip[4:], uint16(total-header.IPv6MinimumSize))
		} else {
			h := header.IPv4(ip)
			h.SetTotalLength(uint16(total))
			h.SetID(h.ID() + uint16(s.i))
			h.SetChecksum(0)
			h.SetChecksum(^h.CalculateChecksum())
		}
		tcp.SetSequenceNumber(s.seq + uint32(s.i*s.mss))
		if s.left > 0 {
			// FIN and PSH belong to the last packet only.
			tcp.SetFlags(uint8(tcp.Flags() &^ (header.TCPFlagFin | header.TCPFlagPsh)))
		}
		tcp.SetChecksum(0)
		xsum := checksum.Combine(s.initial, uint16(len(tcp)))
		tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
		sizes[n] = total
		s.i++
	}
	if s.left == 0 {
		s.release()
	}
	return n
}

// finishChecksum completes the partial TCP checksum of an unsplit packet p
// from gVisor (GSOOptions.NeedsCsum): the field holds the pseudo-header's
// sum, to which the TCP header and payload must be added.
func finishChecksum(p []byte, ipLen int) {
	if len(p) < ipLen+header.TCPMinimumSize {
		return
	}
	tcp := header.TCP(p[ipLen:])
	initial := tcp.Checksum()
	tcp.SetChecksum(0)
	tcp.SetChecksum(^checksum.Checksum(tcp, initial))
}
