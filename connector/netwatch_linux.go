package connector

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// netlinkWatch is a subscription to the kernel's rtnetlink notifications of
// address, link and IPv4 route changes. Nothing is sent or polled: the
// reader sleeps in the runtime's poller until the kernel has news.
type netlinkWatch struct{ f *os.File }

func openNetlinkWatch() (*netlinkWatch, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink socket: %w", err)
	}
	sa := &unix.SockaddrNetlink{
		Family: unix.AF_NETLINK,
		Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR | unix.RTMGRP_IPV4_ROUTE,
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("rtnetlink bind: %w", err)
	}
	// Non-blocking, so os.File waits in the poller and Close wakes a
	// pending Read (closing a blocking socket would not).
	return &netlinkWatch{f: os.NewFile(uintptr(fd), "rtnetlink")}, nil
}

// run sends what each read reports to out until ctx ends (nil) or a read
// fails (the error); it closes the socket either way. It never retries: a
// failed subscription is the caller's to replace with polling.
func (w *netlinkWatch) run(ctx context.Context, out chan<- netChange) error {
	defer w.f.Close()
	stop := context.AfterFunc(ctx, func() { w.f.Close() })
	defer stop()
	buf := make([]byte, 32<<10) // notifications are at most a page each
	rc, err := w.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("rtnetlink: %w", err)
	}
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if nl, ok := from.(*unix.SockaddrNetlink); err == nil && (!ok || nl.Pid != 0) {
			// Any local process may write to our port: only the
			// kernel's word counts, or it could make a metered device
			// rebind and send keepalives at will.
			continue
		}
		var ch netChange
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, unix.ENOBUFS):
			// The kernel dropped notifications we were too slow for:
			// assume the worst of what they said.
			ch = addrsChanged | defaultRoute
		case err != nil:
			return fmt.Errorf("read rtnetlink: %w", err)
		default:
			ch = parseNetlink(buf[:n])
		}
		if ch == 0 {
			continue
		}
		select {
		case out <- ch:
		case <-ctx.Done():
			return nil
		}
	}
}

// parseNetlink reads what a batch of rtnetlink notifications is about.
func parseNetlink(b []byte) netChange {
	var ch netChange
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			break
		}
		body := b[unix.NLMSG_HDRLEN:l]
		switch typ {
		case unix.RTM_NEWADDR, unix.RTM_DELADDR, unix.RTM_NEWLINK, unix.RTM_DELLINK:
			ch |= addrsChanged
		case unix.RTM_NEWROUTE:
			// struct rtmsg: family, dst_len, src_len, tos, table,
			// protocol, scope, type, flags. A default route in any
			// table counts: policy routing may keep it out of main.
			if len(body) >= unix.SizeofRtMsg && body[1] == 0 && body[7] == unix.RTN_UNICAST {
				ch |= defaultRoute
			}
		}
		l = (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if l >= len(b) {
			break
		}
		b = b[l:]
	}
	return ch
}
