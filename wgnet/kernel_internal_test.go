package wgnet

// An internal test: the kernel device's filter parses bytes from the tunnel
// and is not exported. TestKernelDevice tests it from outside.

import (
	"net/netip"
	"slices"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// capture is the kernel's side of a tunFilter: it keeps what Write gets.
type capture struct {
	tun.Device
	got [][]byte
}

func (c *capture) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		c.got = append(c.got, b[offset:])
	}
	return len(bufs), nil
}

func TestTunFilter(t *testing.T) {
	// synPacket's packets come from 10.77.0.1 (v4) or fd00::1 (v6).
	local, local6 := netip.MustParseAddr("10.77.0.9"), netip.MustParseAddr("fd00::9")
	swapped := func(p []byte) []byte { // the same packet, the other way
		p = slices.Clone(p)
		var src, dst [4]byte
		copy(src[:], p[12:16])
		copy(dst[:], p[16:20])
		copy(p[12:16], dst[:])
		copy(p[16:20], src[:])
		tcp := p[20:]
		tcp[0], tcp[1], tcp[2], tcp[3] = tcp[2], tcp[3], tcp[0], tcp[1]
		return p
	}
	syn := synPacket(t, local, 7070, header.TCPFlagSyn)
	ack := synPacket(t, local, 7070, header.TCPFlagAck)
	fragment := slices.Clone(ack)
	fragment[6] |= 0x20 // more fragments
	udp := slices.Clone(ack)
	udp[9] = 17
	in := []struct {
		name   string
		packet []byte
		want   bool
	}{
		{"syn to the listener", syn, true},
		{"ack to the listener", ack, true},
		{"to another port", synPacket(t, local, 22, header.TCPFlagSyn), false},
		{"to another address", synPacket(t, netip.MustParseAddr("10.77.0.8"), 7070, header.TCPFlagSyn), false},
		{"fragment", fragment, false},
		{"udp", udp, false},
		{"ipv6 to an ipv4 device", synPacket(t, local6, 7070, header.TCPFlagSyn), false},
		{"short", syn[:30], false},
		{"empty", nil, false},
	}
	f := &tunFilter{addr: local}
	f.ports.add(7070)
	for _, tt := range in {
		t.Run("in/"+tt.name, func(t *testing.T) {
			if got := f.allowedIn(tt.packet); got != tt.want {
				t.Errorf("allowedIn = %v, want %v", got, tt.want)
			}
		})
	}
	if !f.syns.take(netip.MustParseAddrPort("10.77.0.1:40000")) {
		t.Error("the listener's SYN was not remembered")
	}
	if f.syns.take(netip.MustParseAddrPort("10.77.0.1:40000")) {
		t.Error("a SYN was taken twice")
	}
	t.Run("out", func(t *testing.T) {
		if !f.allowedOut(swapped(ack)) {
			t.Error("the listener's answer is not let out")
		}
		if f.allowedOut(swapped(synPacket(t, local, 22, header.TCPFlagAck))) {
			t.Error("a packet from another port is let out")
		}
		if f.allowedOut(ack) {
			t.Error("a packet not from the device's address is let out")
		}
		f.ports.add(22)
		f.ports.add(22)
		f.ports.remove(22)
		if !f.allowedOut(swapped(synPacket(t, local, 22, header.TCPFlagAck))) {
			t.Error("a port added twice and removed once is closed")
		}
		f.ports.remove(22)
		if f.allowedOut(swapped(synPacket(t, local, 22, header.TCPFlagAck))) {
			t.Error("a removed port is open")
		}
	})
	t.Run("write", func(t *testing.T) {
		const offset = 16
		pad := func(p []byte) []byte { return append(make([]byte, offset), p...) }
		k := &capture{}
		f := &tunFilter{Device: k, addr: local}
		f.ports.add(7070)
		bufs := [][]byte{pad(ack), pad(udp), pad(syn), pad(fragment)}
		if n, err := f.Write(bufs, offset); n != len(bufs) || err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(bufs))
		}
		if len(k.got) != 2 || !slices.Equal(k.got[0], ack) || !slices.Equal(k.got[1], syn) {
			t.Errorf("the kernel got %d packets, want the 2 allowed, in order", len(k.got))
		}
		if d := f.droppedIn.Load(); d != 2 {
			t.Errorf("dropped %d, want 2", d)
		}
	})
}

func FuzzLocalTCP(f *testing.F) {
	v4, v6 := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("fd00::1")
	f.Add(synPacket(f, netip.MustParseAddr("10.77.0.9"), 7070, header.TCPFlagSyn))
	f.Add(synPacket(f, netip.MustParseAddr("fd00::9"), 7070, header.TCPFlagSyn))
	f.Fuzz(func(t *testing.T, packet []byte) {
		for _, a := range []netip.Addr{v4, v6} {
			for _, in := range []bool{true, false} {
				if _, _, seg, ok := localTCP(packet, a, in); ok && len(seg) < 20 {
					t.Fatalf("a TCP segment of %d bytes", len(seg))
				}
			}
		}
	})
}
