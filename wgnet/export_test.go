package wgnet

import (
	"fmt"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TCPStats returns the stack's TCP counters, for tests that show why a
// transfer was slow.
func TCPStats(d *Device) tcpip.TCPStats { return d.tun.stack.Stats().TCP }

// TCPInfo describes each TCP endpoint of d's stack that has a smoothed RTT:
// its RTT estimate, RTO and congestion state.
func TCPInfo(d *Device) []string {
	var out []string
	for _, te := range d.tun.stack.RegisteredEndpoints() {
		ep, ok := te.(*tcp.Endpoint)
		if !ok {
			continue
		}
		var info tcpip.TCPInfoOption
		if err := ep.GetSockOpt(&info); err != nil || info.RTT == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("srtt %v rttvar %v rto %v cwnd %d ssthresh %d cc %d",
			info.RTT.Round(100_000), info.RTTVar.Round(100_000), info.RTO.Round(100_000), info.SndCwnd, info.SndSsthresh, info.CcState))
	}
	return out
}

// SendBuffer is one connection's send buffer beside what may be in flight:
// its congestion window or the receiver's window, the smaller.
type SendBuffer struct {
	Size, Window int64 // bytes
	RTT          time.Duration
}

// SendBuffers lists the send buffer of each established connection that
// d's DialTCP or ListenTCP made and that has a smoothed RTT.
func SendBuffers(d *Device) []SendBuffer {
	var out []SendBuffer
	d.tun.conns.Range(func(_, v any) bool {
		c := v.(*boundedConn)
		var info tcpip.TCPInfoOption
		if err := c.ep.GetSockOpt(&info); err != nil || info.RTT == 0 || info.State != tcpip.EndpointState(tcp.StateEstablished) {
			return true
		}
		w := int64(info.SndCwnd) * c.mss
		if p := c.peer.Load(); p > 0 {
			w = min(w, p)
		}
		out = append(out, SendBuffer{Size: c.ep.SocketOptions().GetSendBufferSize(), Window: w, RTT: info.RTT})
		return true
	})
	return out
}
