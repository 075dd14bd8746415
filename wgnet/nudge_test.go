package wgnet

// An internal test: isSYNTo parses bytes from the tunnel and is not exported.

import (
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func synPacket(tb testing.TB, dst netip.Addr, port uint16, flags header.TCPFlags) []byte {
	tb.Helper()
	src := netip.MustParseAddr("10.77.0.1")
	ipLen := header.IPv4MinimumSize
	if dst.Is6() {
		src = netip.MustParseAddr("fd00::1")
		ipLen = header.IPv6MinimumSize
	}
	b := make([]byte, ipLen+header.TCPMinimumSize)
	if dst.Is4() {
		header.IPv4(b).Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)),
			TTL:         64,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     tcpip.AddrFromSlice(src.AsSlice()),
			DstAddr:     tcpip.AddrFromSlice(dst.AsSlice()),
		})
	} else {
		header.IPv6(b).Encode(&header.IPv6Fields{
			PayloadLength:     header.TCPMinimumSize,
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           tcpip.AddrFromSlice(src.AsSlice()),
			DstAddr:           tcpip.AddrFromSlice(dst.AsSlice()),
		})
	}
	header.TCP(b[ipLen:]).Encode(&header.TCPFields{
		SrcPort:    40000,
		DstPort:    port,
		DataOffset: header.TCPMinimumSize,
		Flags:      flags,
		WindowSize: 65535,
	})
	return b
}

func TestIsSYNTo(t *testing.T) {
	v4 := netip.MustParseAddr("10.77.0.2")
	v6 := netip.MustParseAddr("fd00::2")
	tests := []struct {
		name   string
		packet []byte
		addr   netip.Addr
		want   bool
	}{
		{"IPv4 SYN", synPacket(t, v4, 7777, header.TCPFlagSyn), v4, true},
		{"IPv6 SYN", synPacket(t, v6, 7777, header.TCPFlagSyn), v6, true},
		{"SYN-ACK", synPacket(t, v4, 7777, header.TCPFlagSyn|header.TCPFlagAck), v4, false},
		{"ACK", synPacket(t, v4, 7777, header.TCPFlagAck), v4, false},
		{"other port", synPacket(t, v4, 7778, header.TCPFlagSyn), v4, false},
		{"other address", synPacket(t, netip.MustParseAddr("10.77.0.3"), 7777, header.TCPFlagSyn), v4, false},
		{"IPv6 packet, IPv4 node", synPacket(t, v6, 7777, header.TCPFlagSyn), v4, false},
		{"truncated", synPacket(t, v4, 7777, header.TCPFlagSyn)[:30], v4, false},
		{"empty", nil, v4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isSYNTo(tt.packet, tt.addr, 7777); got != tt.want {
				t.Errorf("isSYNTo = %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzIsSYNTo(f *testing.F) {
	v4 := netip.MustParseAddr("10.77.0.2")
	v6 := netip.MustParseAddr("fd00::2")
	f.Add(synPacket(f, v4, 7777, header.TCPFlagSyn))
	f.Add(synPacket(f, v6, 7777, header.TCPFlagSyn))
	f.Fuzz(func(t *testing.T, packet []byte) {
		isSYNTo(packet, v4, 7777) // must not panic
		isSYNTo(packet, v6, 7777)
	})
}
