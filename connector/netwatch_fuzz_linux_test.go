package connector

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// FuzzParseNetlink: whatever the socket delivers, parsing ends and reads
// nothing outside the buffer.
func FuzzParseNetlink(f *testing.F) {
	hdr := func(l uint32, typ uint16, body ...byte) []byte {
		b := binary.NativeEndian.AppendUint32(nil, l)
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = append(b, make([]byte, 10)...)
		return append(b, body...)
	}
	f.Add(hdr(16, unix.RTM_NEWADDR))
	f.Add(hdr(28, unix.RTM_NEWROUTE, unix.AF_INET, 0, 0, 0, 254, 3, 0, unix.RTN_UNICAST, 0, 0, 0, 0))
	f.Add(hdr(0, unix.RTM_NEWLINK))
	f.Add(hdr(0xffffffff, unix.RTM_DELADDR))
	f.Add(append(hdr(17, unix.RTM_NEWADDR, 1), hdr(16, unix.RTM_NEWLINK)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseNetlink(b)
	})
}

// TestNetlinkIgnoresUserspace: a local process writing a well-formed
// "address added" to the watcher's port is not believed; only the kernel's
// notifications count.
func TestNetlinkIgnoresUserspace(t *testing.T) {
	w, err := openNetlinkWatch()
	if err != nil {
		t.Skipf("no rtnetlink here: %v", err)
	}
	rc, err := w.f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var port uint32
	rc.Control(func(fd uintptr) {
		if sa, err := unix.Getsockname(int(fd)); err == nil {
			port = sa.(*unix.SockaddrNetlink).Pid
		}
	})
	if port == 0 {
		t.Fatal("no netlink port id for the watcher")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan netChange, 1)
	go w.run(ctx, out)

	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	msg := binary.NativeEndian.AppendUint32(nil, 16)
	msg = binary.NativeEndian.AppendUint16(msg, unix.RTM_NEWADDR)
	msg = append(msg, make([]byte, 10)...)
	if err := unix.Sendto(s, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port}); err != nil {
		t.Fatalf("send to the watcher's port: %v", err)
	}
	select {
	case ch := <-out:
		t.Fatalf("a userspace message was taken for a network change (%v)", ch)
	case <-time.After(300 * time.Millisecond):
	}
}
