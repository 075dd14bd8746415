package wgnet

import (
	"errors"
	"net"
	"os"
	"unsafe"

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

// UDP segmentation offload, adapted from wireguard-go's conn/gso_linux.go,
// conn/features_linux.go, conn/controlfns_linux.go and conn/errors_linux.go
// (golang.zx2c4.com/wireguard, MIT, Copyright (C) 2017-2025 WireGuard LLC).
//
// With UDP_SEGMENT (GSO, Linux 4.18) one sendmsg carries up to 64 equal-sized
// datagrams that the kernel cuts apart as late as possible (on loopback:
// never, if the receiver has GRO on). With UDP_GRO (Linux 5.0; readable back
// since 5.12) the kernel hands the receiver a train of same-flow datagrams as
// one buffer plus a control message with the segment size.

// gsoDataSize is the size of the UDP_SEGMENT / UDP_GRO control data: a uint16.
const gsoDataSize = 2

// gsoControlSize is the room a message needs for one UDP_SEGMENT or UDP_GRO
// control message.
var gsoControlSize = unix.CmsgSpace(gsoDataSize)

// enableUDPOffload turns UDP_GRO on and reports which offloads the socket
// supports. Kernels before 5.12 cannot report UDP_GRO back, so on them GRO
// stays off, as in wireguard-go: an unreported GRO would truncate nothing
// (our buffers are 64 KiB) but its segment size would go unread.
func enableUDPOffload(c *net.UDPConn) (tx, rx bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false, false
	}
	err = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		tx = err == nil
		if unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) != nil {
			return
		}
		on, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO)
		rx = err == nil && on == 1
		if !rx {
			// On, but unverifiable: switch it off again rather than risk
			// receiving coalesced datagrams we cannot tell apart.
			unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0)
		}
	})
	if err != nil {
		return false, false
	}
	return tx, rx
}

// getGSOSize returns the segment size of a UDP_GRO control message in
// control, or 0 if there is none (the datagram was not coalesced).
func getGSOSize(control []byte) (int, error) {
	rem := control
	for len(rem) > unix.SizeofCmsghdr {
		hdr, data, next, err := unix.ParseOneSocketControlMessage(rem)
		if err != nil {
			return 0, err
		}
		if hdr.Level == unix.SOL_UDP && hdr.Type == unix.UDP_GRO && len(data) >= gsoDataSize {
			var size uint16
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&size)), gsoDataSize), data[:gsoDataSize])
			return int(size), nil
		}
		rem = next
	}
	return 0, nil
}

// setGSOSize appends a UDP_SEGMENT control message for size to control, if
// control has the capacity.
func setGSOSize(control *[]byte, size uint16) {
	n := len(*control)
	space := unix.CmsgSpace(gsoDataSize)
	if cap(*control)-n < space {
		return
	}
	*control = (*control)[:n+space]
	c := (*control)[n:]
	clear(c)
	hdr := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	hdr.Level = unix.SOL_UDP
	hdr.Type = unix.UDP_SEGMENT
	hdr.SetLen(unix.CmsgLen(gsoDataSize))
	copy(c[unix.CmsgLen(0):], unsafe.Slice((*byte)(unsafe.Pointer(&size)), gsoDataSize))
}

// shouldDisableGSO reports whether a send error means the socket's route
// cannot do UDP_SEGMENT at all: udp_send_skb returns EIO when the device has
// no TX checksum offload, which UDP_SEGMENT requires.
func shouldDisableGSO(err error) bool {
	var serr *os.SyscallError
	return errors.As(err, &serr) && serr.Err == unix.EIO
}
