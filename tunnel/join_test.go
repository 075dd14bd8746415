package tunnel_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"

	"github.com/fieldpass/fieldpass/tunnel"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *net.TCPConn, 1)
	go func() {
		c, _ := ln.AcceptTCP()
		got <- c
	}()
	a, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b := <-got
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestJoinCarriesBothWays: Join passes bytes both ways intact, whatever
// their size against its small first buffer and its large one, and passes
// each side's half-close on, so a reply can follow a request's end.
func TestJoinCarriesBothWays(t *testing.T) {
	for _, n := range []int{1, 2 << 10, 2<<10 + 1, 100 << 10, 3 << 20} {
		client, in := tcpPair(t)
		out, service := tcpPair(t)
		counts := make(chan [2]int64, 1)
		go func() {
			a, b := tunnel.Join(in, out)
			counts <- [2]int64{a, b}
		}()
		request, reply := make([]byte, n), make([]byte, n/2+1)
		rand.Read(request)
		rand.Read(reply)
		go func() {
			client.Write(request)
			client.CloseWrite()
		}()
		got, err := io.ReadAll(service)
		if err != nil || !bytes.Equal(got, request) {
			t.Fatalf("%d bytes: the service got %d bytes (%v), want the request", n, len(got), err)
		}
		service.Write(reply)
		service.CloseWrite()
		back, err := io.ReadAll(client)
		if err != nil || !bytes.Equal(back, reply) {
			t.Fatalf("%d bytes: the client got %d bytes back (%v), want the reply", n, len(back), err)
		}
		if c := <-counts; c[0] != int64(len(request)) || c[1] != int64(len(reply)) {
			t.Fatalf("%d bytes: Join counted %d and %d, want %d and %d", n, c[0], c[1], len(request), len(reply))
		}
	}
}
