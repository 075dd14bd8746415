package wgnet

import (
	"net"

	"golang.org/x/sys/unix"
)

// setSocketBuffers enlarges the socket's kernel buffers, as wireguard-go's
// StdNetBind does: a burst of 128-datagram batches overflows the default
// 208 KiB receive buffer, and each overflow is a TCP loss inside the tunnel.
// The *FORCE options exceed net.core.rmem_max/wmem_max but need
// CAP_NET_ADMIN; rootless, the plain options get up to those limits.
func setSocketBuffers(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
		}
	})
}
