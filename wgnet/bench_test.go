package wgnet_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/wgnet"
)

// BenchmarkTCPThroughput measures one TCP stream through two wgnet devices
// on loopback, each way, beside plain loopback TCP in the same run: compare
// the ratio, not the absolute figures (bench/README.md says why).
func BenchmarkTCPThroughput(b *testing.B) {
	b.Run("loopback", func(b *testing.B) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		benchStream(b, l, func() (net.Conn, error) { return net.Dial("tcp", l.Addr().String()) })
	})

	p := NewPair(b, wgnet.Config{})
	defer p.Close()
	p.MustHandshake(b)
	// A fresh port for each run: the last run's connection is in TIME_WAIT.
	port := uint16(5000)
	b.Run("wgnet/connector-to-broker", func(b *testing.B) {
		port++
		to := netip.AddrPortFrom(brokerAddr, port)
		l, err := p.broker.ListenTCP(port)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		benchStream(b, l, func() (net.Conn, error) {
			return p.connector.DialTCP(context.Background(), to)
		})
	})
	b.Run("wgnet/broker-to-connector", func(b *testing.B) {
		port++
		to := netip.AddrPortFrom(connectorAddr, port)
		l, err := p.connector.ListenTCP(port)
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		benchStream(b, l, func() (net.Conn, error) {
			return p.broker.DialTCP(context.Background(), to)
		})
	})
}

// eachDirection runs run as a sub-benchmark for each direction of a fresh
// pair built with cfg ("broker-to-connector", "connector-to-broker"), with
// a listener on the receiving device (ports from port+1) and a dial from
// the sending one.
func eachDirection(b *testing.B, cfg wgnet.Config, port uint16, run func(b *testing.B, l net.Listener, dial func() (net.Conn, error))) {
	p := NewPair(b, cfg)
	defer p.Close()
	p.MustHandshake(b)
	for _, dir := range []struct {
		name     string
		from, to *wgnet.Device
		addr     netip.Addr
	}{
		{"broker-to-connector", p.broker, p.connector, connectorAddr},
		{"connector-to-broker", p.connector, p.broker, brokerAddr},
	} {
		b.Run(dir.name, func(b *testing.B) {
			port++
			l, err := dir.to.ListenTCP(port)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			to := netip.AddrPortFrom(dir.addr, port)
			run(b, l, func() (net.Conn, error) { return dir.from.DialTCP(context.Background(), to) })
		})
	}
}

// benchStream writes b.N chunks over one connection from dial to l and
// stops the clock when the receiver has read them all.
func benchStream(b *testing.B, l net.Listener, dial func() (net.Conn, error)) {
	const chunk = 128 << 10
	total := int64(b.N) * chunk
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.CopyN(io.Discard, c, total)
		done <- err
	}()
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}
