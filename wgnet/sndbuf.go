package wgnet

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

const (
	// trimInterval is how often trimSendBuffers runs. Each run lists
	// every endpoint of the stack (a fresh slice: 16 KB at a broker's
	// 1000 devices) and reads the congestion state of those with more
	// than trimFloor of buffer, so not more often than the fleet's memory
	// budget allows (bench/README.md); gVisor's auto-tuning does the
	// growing in between.
	trimInterval = time.Second
	// trimFloor is the least send buffer trimSendBuffers leaves: on a
	// lossy 300 ms path Reno sends some 40 KB/s, so even this is 0.4 s in
	// front of a new stream.
	trimFloor = 16 << 10
)

// trimSendBuffers shrinks each TCP connection's send buffer back to twice
// its congestion window. gVisor's auto-tuning grows a send buffer to that
// size as the window opens but never shrinks it, so a slow start that
// overshot a cellular carrier's queue, or a window cut by loss, left a
// buffer of several round trips' worth of data queued in front of every
// new stream (all of a device's streams share one connection). Linux bounds
// the same queue with TCP_NOTSENT_LOWAT; gVisor has none. Data already
// queued stays; writers wait until the connection drains below half of
// the new size, as gVisor's auto-tuning has them do anyway.
func (t *netTun) trimSendBuffers() {
	for _, te := range t.stack.RegisteredEndpoints() {
		ep, ok := te.(*tcp.Endpoint)
		if !ok {
			continue
		}
		ops := ep.SocketOptions()
		cur := ops.GetSendBufferSize()
		if cur <= trimFloor {
			continue
		}
		var info tcpip.TCPInfoOption
		if ep.GetSockOpt(&info) != nil || info.State != tcpip.EndpointState(tcp.StateEstablished) {
			continue
		}
		// Not during loss recovery, whose window is briefly a packet or
		// two: the buffer holds what is to be resent, and the window
		// comes back to the slow-start threshold within a few round trips.
		if info.CcState != tcpip.Open {
			continue
		}
		window := int64(info.SndCwnd)
		if info.SndSsthresh < 1<<20 { // not the "none yet" of a first slow start
			window = max(window, int64(info.SndSsthresh))
		}
		want := max(2*window*int64(t.mtu), trimFloor)
		if want < cur-cur/4 {
			// notify false: a size set with notify turns auto-tuning off
			// for good, and it should keep growing the buffer with the
			// window.
			ops.SetSendBufferSize(want, false)
		}
	}
}
