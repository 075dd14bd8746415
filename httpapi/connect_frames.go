package httpapi

import (
	"io"

	"github.com/fieldpass/fieldpass/tunnel"
)

// RawConnectConn wraps the connection of the raw connect transport
// (ConnectUpgrade) for yamux, on both ends: each data frame leaves in one
// write with its header (tunnel.CoalesceFrames), so that a keystroke, a
// stream's first bytes or a 1-byte echo is one TLS record and one system
// call, not two.
func RawConnectConn(c io.ReadWriteCloser) io.ReadWriteCloser {
	return tunnel.CoalesceFrames(c, 0)
}
