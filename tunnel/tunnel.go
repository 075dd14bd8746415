// Package tunnel is the wire protocol between the broker and a connector.
//
// Inside WireGuard the connector opens one TCP connection to the broker's
// tunnel address, sends a Hello, reads a HelloReply, and then both ends run a
// yamux session over the connection: the broker opens one stream per session,
// each beginning with a StreamHeader, which the connector answers with a
// StreamStatus before any other byte flows. PROTOCOL.md beside this file is
// the specification; this package is its only implementation.
//
// Every decoder here reads untrusted bytes: they are length-limited, never
// allocate more than a few hundred bytes, and are fuzzed (testdata/fuzz).
package tunnel

import (
	"io"
	"log"
	"time"

	"github.com/hashicorp/yamux"
)

// Version is the protocol version both ends speak. A peer that receives a
// different version refuses the stream or hello with a clear status.
const Version = 1

// BrokerPort is the TCP port the broker listens on at its tunnel address.
const BrokerPort = 7070

// NudgePort is the TCP port a broker dials at a device's tunnel address to
// tell a connector that its tunnel TCP connection is gone (after a broker
// restart). Nothing listens there: the connector notices the SYN in its own
// network stack and reconnects at once, so no periodic heartbeat is needed.
const NudgePort = 7071

// DefaultMTU is safe on private APNs that forbid fragmentation: 1280 is the
// IPv6 minimum and fits inside every carrier's GTP encapsulation.
const DefaultMTU = 1280

// DefaultKeepalive is WireGuard's persistent keepalive: often enough to hold
// carrier NAT mappings open, and the only periodic traffic of an idle device.
const DefaultKeepalive = 25 * time.Second

// YamuxConfig returns the yamux settings both ends must share.
//
// yamux's keepalive is off: WireGuard's persistent keepalive already holds
// the NAT mapping, and liveness is read from the tunnel (handshakes and
// received bytes), so a second heartbeat would only cost cellular data. The
// stream window suits cellular round trips (window/RTT bounds a stream's
// throughput: 2 MiB at 100 ms is ~20 MB/s). window 0 means the default.
func YamuxConfig(window uint32) *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	if window == 0 {
		window = DefaultWindow
	}
	c.MaxStreamWindowSize = window
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = 5 * time.Minute
	// yamux logs to stderr by default; its few messages are about the
	// session ending, which callers report themselves.
	c.LogOutput = nil
	c.Logger = log.New(io.Discard, "", 0)
	return c
}

// DefaultWindow is the default per-stream yamux receive window.
const DefaultWindow = 2 << 20
