package wgnet_test

import (
	"context"
	"flag"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fieldpass/fieldpass/wgnet"
	"github.com/fieldpass/fieldpass/wgnet/wgtest"
)

var tunnelPrefix = netip.MustParsePrefix("10.77.0.0/16")

// TestKernelDevice runs a broker's side on a kernel TUN device, in a network
// namespace of the test's own, with two netstack devices as peers, one of
// them an attacker that routes the whole prefix to the broker. The host has
// IP forwarding on (as hosts running containers do) and services on other
// ports, on all addresses and on the tunnel address itself.
func TestKernelDevice(t *testing.T) {
	if !wgtest.InNetns() {
		wgtest.RunInNetns(t, []string{"-test.run=^TestKernelDevice$", "-test.count=1"})
		return
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	const name = "fptest0"

	t.Run("without CAP_NET_ADMIN", func(t *testing.T) {
		errc := make(chan error, 1)
		go func() {
			// Capabilities are a thread's: this one drops CAP_NET_ADMIN
			// and is never unlocked, so it dies with the goroutine.
			runtime.LockOSThread()
			if err := dropCapability(unix.CAP_NET_ADMIN); err != nil {
				errc <- err
				return
			}
			d, err := wgnet.NewKernel(wgnet.KernelConfig{Config: wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr}, Name: name, Prefix: tunnelPrefix})
			if err == nil {
				d.Close()
			}
			errc <- err
		}()
		err := <-errc
		if err == nil || !strings.Contains(err.Error(), "needs CAP_NET_ADMIN") {
			t.Fatalf("NewKernel without CAP_NET_ADMIN: err %v, want one saying it needs CAP_NET_ADMIN", err)
		}
		if _, err := net.InterfaceByName(name); err == nil {
			t.Fatalf("interface %s left behind", name)
		}
	})

	kd, err := wgnet.NewKernel(wgnet.KernelConfig{
		Config: wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr, ListenAddr: loopback},
		Name:   name, Prefix: tunnelPrefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer kd.Close()
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if addrs, _ := ifc.Addrs(); len(addrs) != 1 || addrs[0].String() != "10.77.0.1/16" {
		t.Errorf("%s has addresses %v, want only 10.77.0.1/16", name, addrs)
	}
	t.Run("name taken", func(t *testing.T) {
		_, err := wgnet.NewKernel(wgnet.KernelConfig{Config: wgnet.Config{PrivateKey: MustKey(t), Address: brokerAddr}, Name: name, Prefix: tunnelPrefix})
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("a second %s: err %v, want one saying it already exists", name, err)
		}
	})

	ln, err := kd.ListenTCP(7070)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echoServe(ln)
	// The host's own services, which no device may reach.
	for _, addr := range []string{"0.0.0.0:2222", "10.77.0.1:2223"} {
		l, err := net.Listen("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go echoServe(l)
	}

	newDevice := func(addr netip.Addr) *wgnet.Device {
		d := MustNew(t, wgnet.Config{PrivateKey: MustKey(t), Address: addr, ListenAddr: loopback})
		t.Cleanup(func() { d.Close() })
		// Everything in the prefix is routed to the broker: what an
		// attacker holding a device's key would do.
		MustSetPeer(t, d, wgnet.Peer{PublicKey: kd.PublicKey(), AllowedIPs: []netip.Prefix{tunnelPrefix},
			Endpoint: netip.AddrPortFrom(loopback.Addr(), kd.ListenPort())})
		if err := kd.SetPeer(wgnet.Peer{PublicKey: d.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, 32)}}); err != nil {
			t.Fatal(err)
		}
		return d
	}
	a := newDevice(netip.MustParseAddr("10.77.0.2"))
	b := newDevice(netip.MustParseAddr("10.77.0.3"))
	for _, d := range []*wgnet.Device{a, b} {
		l, err := d.ListenTCP(22)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go echoServe(l)
	}
	deviceDial := func(d *wgnet.Device, to string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := d.DialTCP(ctx, netip.MustParseAddrPort(to))
		if err != nil {
			return err
		}
		defer c.Close()
		return echoCheck(c)
	}

	t.Run("device to broker", func(t *testing.T) {
		if err := deviceDial(a, "10.77.0.1:7070"); err != nil {
			t.Fatal(err)
		}
		if err := deviceDial(b, "10.77.0.1:7070"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := a.DialTCP(ctx, netip.MustParseAddrPort("10.77.0.1:7070"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echo(c, 8<<20, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("broker to device", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := kd.DialTCP(ctx, netip.MustParseAddrPort("10.77.0.2:22"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echoCheck(c); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unsent data bounded", func(t *testing.T) {
		// What a tunnel connection may hold unsent is bounded, as on the
		// netstack (the broker writes every stream of a device into it).
		l, err := kd.ListenTCP(7071)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := deviceDial(a, "10.77.0.1:7071"); err == nil {
			t.Fatal("the dial got an echo from a listener that echoes nothing")
		}
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc, err := c.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var lowat int
		rc.Control(func(fd uintptr) { lowat, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT) })
		if err != nil || lowat != 128<<10 {
			t.Errorf("TCP_NOTSENT_LOWAT %d, %v; want %d", lowat, err, 128<<10)
		}
	})
	t.Run("peers", func(t *testing.T) {
		ps, err := kd.Peers()
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 2 {
			t.Fatalf("%d peers, want 2", len(ps))
		}
		for _, p := range ps {
			if p.LastHandshake.IsZero() || p.RxBytes == 0 || !p.Endpoint.IsValid() {
				t.Errorf("peer %s: %+v, want a handshake, bytes and an endpoint", p.PublicKey, p)
			}
		}
	})

	// The decoys answer where they are allowed to: on the host itself.
	if c, err := net.DialTimeout("tcp4", "10.77.0.1:2222", time.Second); err != nil {
		t.Fatalf("the host's own service: %v", err)
	} else {
		c.Close()
	}
	t.Run("device to device", func(t *testing.T) {
		if err := deviceDial(a, "10.77.0.3:22"); err == nil {
			t.Error("a device reached another device's service through the broker's interface")
		}
	})
	t.Run("device to host", func(t *testing.T) {
		for _, to := range []string{"10.77.0.1:2222", "10.77.0.1:2223", "127.0.0.1:2222"} {
			if err := deviceDial(a, to); err == nil {
				t.Errorf("a device reached the host's service at %s", to)
			}
		}
	})
	t.Run("host to device", func(t *testing.T) {
		// Any process of the host, not the broker: the kernel routes the
		// prefix to the interface, the filter lets nothing of it out.
		if c, err := net.DialTimeout("tcp4", "10.77.0.2:22", 2*time.Second); err == nil {
			c.Close()
			t.Error("a host process reached a device through the broker's interface")
		}
	})
	t.Run("listener off the interface", func(t *testing.T) {
		// A process of the host, as itself and posing as device a (no
		// privilege needed for IP_FREEBIND): the kernel completes the
		// handshake, the listener closes the connection unanswered.
		for _, from := range []string{"", "10.77.0.2"} {
			d := net.Dialer{Timeout: 2 * time.Second}
			if from != "" {
				d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(from), 0))
				d.Control = func(_, _ string, c syscall.RawConn) error {
					var err error
					c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1) })
					return err
				}
			}
			c, err := d.Dial("tcp4", "10.77.0.1:7070")
			if err != nil {
				continue
			}
			if err := echoCheck(c); err == nil {
				t.Errorf("the tunnel listener answered a connection from %q that did not come through the interface", from)
			}
			c.Close()
		}
	})

	t.Run("close removes the interface", func(t *testing.T) {
		ln.Close()
		kd.Close()
		if _, err := net.InterfaceByName(name); err == nil {
			t.Fatalf("interface %s still there after Close", name)
		}
	})
}

// dropCapability removes c from the calling thread's effective set.
func dropCapability(c int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[c/32].Effective &^= 1 << (c % 32)
	return unix.Capset(&hdr, &data[0])
}

// echoServe echoes every connection ln accepts until ln closes.
func echoServe(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// echoCheck sends a few bytes and reads them back, within 2 s.
func echoCheck(c net.Conn) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	want := []byte("fieldpass")
	if _, err := c.Write(want); err != nil {
		return err
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(want) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// BenchmarkKernelTCPThroughput measures one TCP stream between a broker's
// side and a connector's (a netstack device, not SmallDevice) each way,
// with the broker on a kernel TUN device and on a netstack, beside plain
// loopback TCP, in the same run and a network namespace of its own. Both
// ends live in this process: CPU-s/GiB is theirs together.
func BenchmarkKernelTCPThroughput(b *testing.B) {
	if !wgtest.InNetns() {
		wgtest.RunInNetns(b, []string{"-test.run=^$", "-test.bench=^BenchmarkKernelTCPThroughput$",
			"-test.benchtime=" + flag.Lookup("test.benchtime").Value.String()})
		return
	}
	b.Run("loopback", func(b *testing.B) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		benchStreamCPU(b, l, func() (net.Conn, error) { return net.Dial("tcp", l.Addr().String()) })
	})

	p := NewPair(b, wgnet.Config{})
	defer p.Close()
	p.MustHandshake(b)
	kd, err := wgnet.NewKernel(wgnet.KernelConfig{
		Config: wgnet.Config{PrivateKey: MustKey(b), Address: brokerAddr, ListenAddr: loopback},
		Name:   "fpbench0", Prefix: tunnelPrefix,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer kd.Close()
	conn := MustNew(b, wgnet.Config{PrivateKey: MustKey(b), Address: connectorAddr, ListenAddr: loopback})
	defer conn.Close()
	MustSetPeer(b, conn, wgnet.Peer{PublicKey: kd.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(brokerAddr, 32)},
		Endpoint: netip.AddrPortFrom(loopback.Addr(), kd.ListenPort())})
	if err := kd.SetPeer(wgnet.Peer{PublicKey: conn.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(connectorAddr, 32)}}); err != nil {
		b.Fatal(err)
	}

	type network interface {
		ListenTCP(uint16) (net.Listener, error)
		DialTCP(context.Context, netip.AddrPort) (net.Conn, error)
	}
	port := uint16(5000) // a fresh port for each run: the last one's is in TIME_WAIT
	for _, side := range []struct {
		name              string
		broker, connector network
	}{{"netstack", p.broker, p.connector}, {"kernel", kd, conn}} {
		b.Run(side.name+"/connector-to-broker", func(b *testing.B) {
			port++
			l, err := side.broker.ListenTCP(port)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			drops := tunDrops(b)
			benchStreamCPU(b, l, func() (net.Conn, error) {
				return side.connector.DialTCP(context.Background(), netip.AddrPortFrom(brokerAddr, port))
			})
			drops()
		})
		b.Run(side.name+"/broker-to-connector", func(b *testing.B) {
			port++
			l, err := side.connector.ListenTCP(port)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			drops := tunDrops(b)
			benchStreamCPU(b, l, func() (net.Conn, error) {
				return side.broker.DialTCP(context.Background(), netip.AddrPortFrom(connectorAddr, port))
			})
			drops()
		})
	}
}

// tunDrops counts the packets the benchmark's TUN interface dropped (its
// queue toward wireguard-go full) until the returned function reports them.
func tunDrops(b *testing.B) func() {
	read := func() int {
		v, _ := os.ReadFile("/sys/class/net/fpbench0/statistics/tx_dropped")
		n, _ := strconv.Atoi(strings.TrimSpace(string(v)))
		return n
	}
	before := read()
	return func() { b.ReportMetric(float64(read()-before), "tun-drops") }
}

// benchStreamCPU is benchStream, also reporting the CPU this process spent
// per GiB.
func benchStreamCPU(b *testing.B, l net.Listener, dial func() (net.Conn, error)) {
	var r0, r1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	benchStream(b, l, dial)
	syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	gib := float64(b.N) * (128 << 10) / (1 << 30)
	b.ReportMetric(cpu.Seconds()/gib, "CPU-s/GiB")
}
