//go:build !linux

package wgnet

import "net"

// setSocketBuffers enlarges the socket's kernel buffers as far as the
// system allows; see bind_linux.go.
func setSocketBuffers(c *net.UDPConn) {
	c.SetReadBuffer(socketBuffer)
	c.SetWriteBuffer(socketBuffer)
}
