package wgnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

const (
	// tunDevicePath is the kernel's TUN clone device.
	tunDevicePath = "/dev/net/tun"
	// in6AddrGenModeNone is IN6_ADDR_GEN_MODE_NONE (linux/if_link.h),
	// which x/sys/unix lacks.
	in6AddrGenModeNone = 1
	// notSentLowat bounds the data a tunnel connection holds written but
	// not yet sent (TCP_NOTSENT_LOWAT): all of a device's streams share
	// its one connection, so whatever waits there delays a new stream's
	// open, and the kernel would let it grow to megabytes (tcp_wmem), a
	// second and more on a cellular link. The netstack trims its send
	// buffers to about a round trip for the same reason (sndbuf.go).
	// 128 KiB is 50 ms at 20 Mbit/s.
	notSentLowat = 128 << 10
)

// NewKernel creates the TUN interface cfg.Name, gives it cfg.Address in
// cfg.Prefix (the kernel then routes the prefix to it), brings it up and
// starts WireGuard on it, with no peers. It needs CAP_NET_ADMIN. The
// interface goes away with Close, or with the process.
//
// wireguard-go's TUN device uses the kernel's offloads where it has them
// (IFF_VNET_HDR): the kernel's TCP hands it segments of up to 64 KiB, which
// it cuts to the MTU, and it coalesces a batch's received segments before
// writing them.
func NewKernel(cfg KernelConfig) (*KernelDevice, error) {
	if err := checkKernelConfig(&cfg); err != nil {
		return nil, fmt.Errorf("new kernel device: %w", err)
	}
	if _, err := net.InterfaceByName(cfg.Name); err == nil {
		return nil, fmt.Errorf("new kernel device: an interface named %q already exists (another broker's, or a leftover: ip link del %s)", cfg.Name, cfg.Name)
	}
	if _, err := os.Stat(tunDevicePath); err != nil {
		return nil, fmt.Errorf("new kernel device: %w: the kernel's TUN driver is needed (modprobe tun; in a container, pass the device %s through)", err, tunDevicePath)
	}
	t, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("new kernel device: create TUN interface %q: %w: a kernel TUN device needs CAP_NET_ADMIN", cfg.Name, err)
		}
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("new kernel device: create TUN interface %q: %w: the name is taken", cfg.Name, err)
		}
		return nil, fmt.Errorf("new kernel device: create TUN interface %q: %w", cfg.Name, err)
	}
	kd, err := startKernel(cfg, t)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("new kernel device %s: %w", cfg.Name, err)
	}
	return kd, nil
}

// startKernel configures the interface t and starts WireGuard on it. On
// error the caller closes t.
func startKernel(cfg KernelConfig, t tun.Device) (*KernelDevice, error) {
	ifc, err := net.InterfaceByName(cfg.Name)
	if err != nil {
		return nil, err
	}
	if err := addAddress(ifc.Index, netip.PrefixFrom(cfg.Address, cfg.Prefix.Bits())); err != nil {
		return nil, fmt.Errorf("add address %s/%d: %w", cfg.Address, cfg.Prefix.Bits(), err)
	}
	if err := setLinkUp(ifc.Index); err != nil {
		return nil, fmt.Errorf("bring up: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	filter := &tunFilter{Device: t, addr: cfg.Address}
	d := &Device{addr: cfg.Address, pub: cfg.PrivateKey.Public(), fixedPort: cfg.ListenAddr.Port() != 0}
	var bind conn.Bind = conn.NewDefaultBind()
	if la := cfg.ListenAddr.Addr(); la.IsValid() && !la.IsUnspecified() {
		bind = newAddrBind(la, conn.IdealBatchSize)
	}
	d.wg = device.NewDevice(filter, bind, wgLogger(logger))
	// From here d.wg owns t: closing it closes t.
	set := fmt.Sprintf("private_key=%x\nlisten_port=%d\n", cfg.PrivateKey[:], cfg.ListenAddr.Port())
	if err := d.wg.IpcSet(set); err != nil {
		d.wg.Close()
		return nil, fmt.Errorf("configure: %w", err)
	}
	if err := d.wg.Up(); err != nil {
		d.wg.Close()
		return nil, fmt.Errorf("listen on udp %s: %w", cfg.ListenAddr, err)
	}
	if err := d.refreshPort(); err != nil {
		d.wg.Close()
		return nil, err
	}
	return &KernelDevice{dev: d, name: cfg.Name, addr: cfg.Address, filter: filter}, nil
}

// tuneConn bounds what c holds unsent (notSentLowat). A failure leaves the
// kernel's default, which still works.
func tuneConn(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	if rc, err := tc.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowat)
		})
	}
}

// listenTCPOn listens on ap. Only connections that came through the
// interface are accepted (kernelListener), so the socket needs no
// SO_BINDTODEVICE, which before Linux 5.7 needs CAP_NET_RAW too.
func listenTCPOn(_ string, ap netip.AddrPort) (net.Listener, error) {
	return net.Listen(tcpNetwork(ap.Addr()), ap.String())
}

// dialTCPOn connects from local to remote (which the kernel routes to the
// interface) and returns the local port, which it has added to ports: the
// socket is bound before it connects, so that the filter lets the SYN out.
func dialTCPOn(ctx context.Context, _ string, local netip.Addr, remote netip.AddrPort, ports *portSet) (net.Conn, uint16, error) {
	var port uint16
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		cerr := c.Control(func(fd uintptr) {
			var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: local.As4()}
			if local.Is6() {
				sa = &unix.SockaddrInet6{Addr: local.As16()}
			}
			if err = unix.Bind(int(fd), sa); err != nil {
				return
			}
			var got unix.Sockaddr
			if got, err = unix.Getsockname(int(fd)); err != nil {
				return
			}
			switch sa := got.(type) {
			case *unix.SockaddrInet4:
				port = uint16(sa.Port)
			case *unix.SockaddrInet6:
				port = uint16(sa.Port)
			}
		})
		if cerr != nil {
			return cerr
		}
		if err != nil {
			return fmt.Errorf("bind to %s: %w", local, err)
		}
		ports.add(port)
		return nil
	}}
	c, err := d.DialContext(ctx, tcpNetwork(remote.Addr()), remote.String())
	if err != nil {
		if port != 0 {
			ports.remove(port)
		}
		return nil, 0, err
	}
	return c, port, nil
}

func tcpNetwork(a netip.Addr) string {
	if a.Is4() {
		return "tcp4"
	}
	return "tcp6"
}

// addAddress gives the interface index the address p.Addr() on the subnet
// p (RTM_NEWADDR), without duplicate address detection, which would hold an
// IPv6 address back for a second.
func addAddress(index int, p netip.Prefix) error {
	family, size := unix.AF_INET, 4
	if p.Addr().Is6() {
		family, size = unix.AF_INET6, 16
	}
	body := make([]byte, unix.SizeofIfAddrmsg)
	body[0] = byte(family)
	body[1] = byte(p.Bits())
	body[2] = unix.IFA_F_NODAD
	body[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(body[4:], uint32(index))
	a := p.Addr().AsSlice()
	body = appendAttr(body, unix.IFA_LOCAL, a[:size])
	body = appendAttr(body, unix.IFA_ADDRESS, a[:size])
	return rtnetlink(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body)
}

// setLinkUp turns off the IPv6 link-local address of the interface index
// (IN6_ADDR_GEN_MODE_NONE), so that it has the one address it was given,
// then sets IFF_UP (RTM_NEWLINK both; the kernel makes that address as the
// interface comes up). A kernel without IPv6 has no such address.
func setLinkUp(index int) error {
	body := make([]byte, unix.SizeofIfInfomsg)
	body[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(body[4:], uint32(index))
	inet6 := appendAttr(nil, unix.IFLA_INET6_ADDR_GEN_MODE, []byte{in6AddrGenModeNone})
	spec := appendAttr(nil, unix.AF_INET6|unix.NLA_F_NESTED, inet6)
	err := rtnetlink(unix.RTM_NEWLINK, 0, appendAttr(body, unix.IFLA_AF_SPEC|unix.NLA_F_NESTED, spec))
	if err != nil && !errors.Is(err, unix.EAFNOSUPPORT) && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("turn off the IPv6 link-local address: %w", err)
	}
	binary.NativeEndian.PutUint32(body[8:], unix.IFF_UP)  // flags
	binary.NativeEndian.PutUint32(body[12:], unix.IFF_UP) // change
	return rtnetlink(unix.RTM_NEWLINK, 0, body)
}

// appendAttr appends a netlink attribute, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for l%4 != 0 {
		b = append(b, 0)
		l++
	}
	return b
}

// rtnetlink sends one route netlink request and waits for its
// acknowledgement.
func rtnetlink(typ uint16, flags uint16, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence number
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != 1 || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("netlink: short acknowledgement")
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
				return unix.Errno(-errno)
			}
			return nil
		}
	}
}
