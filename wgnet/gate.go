package wgnet

import (
	"sync/atomic"
	"time"
)

// packetGate bounds how many packets are inside wireguard-go at once, one
// way, for Config.SmallDevice. wireguard-go holds every packet in a 64 KiB
// buffer (its MaxMessageSize) from the moment it enters (a tun Read, a
// bind receive) until it leaves (a bind Send, a tun Write), and on a link
// faster than the device's CPU the TCP window, not the link, decides how
// many wait in its queues: a 1 MiB window is some 850 packets, 53 MiB of
// heap. With the gate, what does not fit waits where it costs the process
// nothing: in gVisor's send buffer, or in the kernel's socket buffer.
//
// wireguard-go drops packets without telling (a failed decryption, a
// replayed counter, a full staging queue while a handshake is pending), so
// a count can only drift upwards: wait gives up after gateWait without a
// packet leaving and starts counting afresh. The bound is a soft one, and
// a stalled gate costs at most gateWait per batch.
type packetGate struct {
	limit  int64
	inside atomic.Int64
	left   chan struct{} // signalled, without blocking, when packets leave
}

const (
	// gatePackets is how many packets one way may be inside wireguard-go
	// on a small device: 2 MiB of its buffers, and at 1280 bytes 40 KB,
	// a few milliseconds of a cellular link.
	gatePackets = 32
	// gateWait is the longest wait for a packet to leave; see packetGate.
	gateWait = 5 * time.Millisecond
)

func newPacketGate(limit int) *packetGate {
	return &packetGate{limit: int64(limit), left: make(chan struct{}, 1)}
}

// wait blocks while the gate is full. A nil gate never blocks.
func (g *packetGate) wait() {
	if g == nil || g.inside.Load() < g.limit {
		return
	}
	t := time.NewTimer(gateWait)
	defer t.Stop()
	for g.inside.Load() >= g.limit {
		select {
		case <-g.left:
		case <-t.C:
			g.inside.Store(0) // drifted: see packetGate
			return
		}
	}
}

// enter counts n packets in.
func (g *packetGate) enter(n int) {
	if g != nil && n > 0 {
		g.inside.Add(int64(n))
	}
}

// leave counts n packets out. Packets that never entered (keepalives and
// handshakes wireguard-go sends itself) leave nothing below zero.
func (g *packetGate) leave(n int) {
	if g == nil || n <= 0 {
		return
	}
	for {
		v := g.inside.Load()
		if g.inside.CompareAndSwap(v, max(v-int64(n), 0)) {
			break
		}
	}
	select {
	case g.left <- struct{}{}:
	default:
	}
}
