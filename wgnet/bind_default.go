//go:build !linux

package wgnet

import "net"

// setSocketBuffers enlarges the socket's kernel buffers as far as the
// system allows; see bind_linux.go.
func setSocketBuffers(c *net.UDPConn) {
	c.SetReadBuffer(socketBuffer)
	c.SetWriteBuffer(socketBuffer)
}

// UDP segmentation offload is Linux's; see bind_linux.go.

const gsoControlSize = 0

func enableUDPOffload(*net.UDPConn) (tx, rx bool) { return false, false }
func getGSOSize([]byte) (int, error)              { return 0, nil }
func setGSOSize(*[]byte, uint16)                  {}
func shouldDisableGSO(error) bool                 { return false }
