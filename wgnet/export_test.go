package wgnet

import (
	"fmt"

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
