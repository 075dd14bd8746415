package broker_test

import (
	"context"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
)

// TestSessionStreamEarlyAcrossReconnect: the device's tunnel drops while
// the connector is still dialling the service (its answer not sent yet,
// the person's first bytes already written): the stream is opened again
// through the device's next tunnel, with those bytes, and carries on; the
// record shows the reconnect and no stream cut.
func TestSessionStreamEarlyAcrossReconnect(t *testing.T) {
	ln, fill := hungListener(t)
	e := brokertest.New(t)
	conn := e.StartConnector(e.Enroll("pump-1"), map[string]string{"slow": ln.Addr().String()}, nil)
	brokertest.WaitFor(t, 20*time.Second, "connector online", func() bool { return e.Broker.Connected("pump-1") })
	ctx := context.Background()
	u, _ := engineerGranted(t, e, "pump-1", "slow")
	m := e.StartSessions(broker.SessionsConfig{})
	s, err := m.Open(ctx, &fieldpass.Caller{User: u}, "pump-1", "slow", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.StreamEarly(ctx, []byte("hel"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("lo")); err != nil {
		t.Fatal(err)
	}
	answered := make(chan error, 1)
	go func() { answered <- st.Answer() }()
	time.Sleep(300 * time.Millisecond) // the connector's dial hangs meanwhile
	select {
	case err := <-answered:
		t.Fatalf("answered while the service's dial hangs: %v", err)
	default:
	}
	conn.Stop()
	brokertest.WaitFor(t, 10*time.Second, "device away", func() bool { return !e.Broker.Connected("pump-1") })
	// The service takes connections again, and echoes.
	fill.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	e.StartAgain(conn)
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("answer through the next tunnel: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no answer 20s after the device came back")
	}
	go func() {
		st.Write([]byte(" world"))
		st.CloseWrite()
	}()
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "hello world" {
		t.Fatalf("echo %q, %v; want %q", got, err, "hello world")
	}
	st.Close()
	s.End(fieldpass.EndClientClosed)
	var r *fieldpass.Session
	brokertest.WaitFor(t, 5*time.Second, "session row ended", func() bool {
		r, err = e.DB.Session(ctx, s.ID())
		return err == nil && !r.Open()
	})
	if r.DeviceReconnects != 1 || r.StreamsCut != 0 || r.BytesIn != 11 || r.BytesOut != 11 {
		t.Fatalf("row: %d reconnects, %d cut, bytes %d/%d; want 1, 0, 11/11", r.DeviceReconnects, r.StreamsCut, r.BytesIn, r.BytesOut)
	}
}

// hungListener listens on loopback with an accept queue of one, filled by
// a connection it returns: until that is closed and the queue drained,
// the kernel drops new connections' SYNs, so their dials hang.
func hungListener(t *testing.T) (net.Listener, net.Conn) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "hung-listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	fill, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fill.Close() })
	// A dial now must hang: otherwise the queue is longer than thought.
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), 200*time.Millisecond); err == nil {
		c.Close()
		// A queue of two on this kernel: fill one more.
		more, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { more.Close() })
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), 200*time.Millisecond); err == nil {
			c.Close()
			t.Skip("cannot fill a listener's accept queue here")
		}
	}
	return ln, fill
}
