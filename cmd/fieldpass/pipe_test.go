package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/tunnel"
)

func writeExecutable(path, content string) error {
	return os.WriteFile(path, []byte(content), 0o755)
}

// fakeSession is a session whose streams are TCP connections to a local
// service: the boundary forward and proxy meet the broker at.
type fakeSession struct {
	addr string // the "device's service"

	mu       sync.Mutex
	streams  int
	reason   string
	done     chan struct{}
	once     sync.Once
	openErr  error
	closedBy string
}

func newFakeSession(t *testing.T, addr string) *fakeSession {
	return &fakeSession{addr: addr, done: make(chan struct{})}
}

func (s *fakeSession) OpenStream() (tunnel.HalfCloser, error) {
	select {
	case <-s.done:
		return nil, errors.New("session closed")
	default:
	}
	if s.openErr != nil {
		return nil, s.openErr
	}
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.streams++
	s.mu.Unlock()
	return c.(*net.TCPConn), nil
}

// end ends the session with reason, as the broker would.
func (s *fakeSession) end(reason string) {
	s.once.Do(func() {
		s.mu.Lock()
		s.reason = reason
		s.mu.Unlock()
		close(s.done)
	})
}

func (s *fakeSession) Close() error          { s.end("client_closed"); return nil }
func (s *fakeSession) Done() <-chan struct{} { return s.done }
func (s *fakeSession) Reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}
func (s *fakeSession) streamCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams
}

// upper answers with its input in upper case once the input has ended,
// then closes: it proves the half-close got through.
func upper(c *net.TCPConn) {
	b, _ := io.ReadAll(c)
	c.Write(bytes.ToUpper(b))
	c.CloseWrite()
}

func TestProxyHalfClose(t *testing.T) {
	s := newFakeSession(t, brokertest.Service(t, upper))
	var out bytes.Buffer
	err := pipeStdio(context.Background(), s, strings.NewReader("hello device"), &out)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "HELLO DEVICE" {
		t.Errorf("got %q, want HELLO DEVICE", out.String())
	}
	if s.Reason() != "client_closed" {
		t.Errorf("session not closed by proxy: reason %q", s.Reason())
	}
}

func TestProxySessionCut(t *testing.T) {
	// The service never answers; the broker cuts the session.
	s := newFakeSession(t, brokertest.Service(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) }))
	stdin, w := io.Pipe()
	defer w.Close()
	errc := make(chan error, 1)
	go func() { errc <- pipeStdio(context.Background(), s, stdin, io.Discard) }()
	time.Sleep(50 * time.Millisecond)
	s.end("grant_expired")
	select {
	case err := <-errc:
		if err == nil || err.Error() != "session ended: grant_expired" {
			t.Fatalf("got %v, want session ended: grant_expired", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("proxy did not stop when the session was cut")
	}
}

func TestProxyRefusedStream(t *testing.T) {
	s := newFakeSession(t, "127.0.0.1:1")
	s.openErr = errors.New("device pump-7 is offline")
	err := pipeStdio(context.Background(), s, strings.NewReader(""), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "offline") {
		t.Fatalf("got %v, want the refusal", err)
	}
}

// TestProxyCommand runs "fieldpass proxy" through run with a fake broker
// session.
func TestProxyCommand(t *testing.T) {
	s := newFakeSession(t, brokertest.Service(t, upper))
	e, stdout, stderr := testEnv(t, nil)
	e.stdin = strings.NewReader("ping")
	var gotDevice, gotService string
	e.connect = func(ctx context.Context, device, service string) (session, error) {
		gotDevice, gotService = device, service
		return s, nil
	}
	r := runEnv(t, e, stdout, stderr, "proxy", "pump-7.fieldpass", "ssh")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if gotDevice != "pump-7" || gotService != "ssh" || r.stdout != "PING" {
		t.Errorf("connected to %s/%s, stdout %q; want pump-7/ssh, PING", gotDevice, gotService, r.stdout)
	}
}

func TestForwardAddr(t *testing.T) {
	for in, want := range map[string]string{
		"":             "127.0.0.1:0",
		"8080":         "127.0.0.1:8080",
		":8080":        "127.0.0.1:8080",
		"0.0.0.0:8080": "0.0.0.0:8080",
		"[::1]:8080":   "[::1]:8080",
		"localhost:80": "localhost:80",
	} {
		if got, err := forwardAddr(in); err != nil || got != want {
			t.Errorf("forwardAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestForwardCommand: forward listens on loopback by default, carries each
// local connection as its own stream of ONE session, and stops with the
// broker's reason when the session is cut.
func TestForwardCommand(t *testing.T) {
	s := newFakeSession(t, brokertest.Service(t, upper))
	connects := 0
	e, _, stderr := testEnv(t, nil)
	outR, outW := io.Pipe()
	e.stdout = outW
	e.connect = func(ctx context.Context, device, service string) (session, error) {
		connects++
		return s, nil
	}
	errc := make(chan error, 1)
	go func() {
		errc <- e.run(context.Background(), []string{"forward", "pump-7", "web"})
		outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("read forward's first line: %v", err)
	}
	fields := strings.Fields(line)
	if len(fields) != 4 || fields[0] != "forwarding" || fields[3] != "pump-7/web" {
		t.Fatalf("first line %q, want forwarding ADDR to pump-7/web", line)
	}
	addr := fields[1]
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("listening on %s, want loopback by default", addr)
	}
	go io.Copy(io.Discard, outR)

	for i, msg := range []string{"one", "two", "three"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(msg))
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != strings.ToUpper(msg) {
			t.Fatalf("connection %d: got %q, %v; want %q", i, b, err, strings.ToUpper(msg))
		}
	}
	if connects != 1 || s.streamCount() != 3 {
		t.Errorf("%d sessions, %d streams; want 1 session carrying 3 streams", connects, s.streamCount())
	}

	s.end("grant_revoked")
	select {
	case err := <-errc:
		if err == nil || err.Error() != "session ended: grant_revoked" || exitCode(err) != 1 {
			t.Fatalf("got %v, want session ended: grant_revoked (exit 1)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("forward did not stop when the session ended")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still listening after the session ended")
	}
	_ = stderr
}

// TestForwardInterrupted: Ctrl-C ends the session from our side and is no
// error; open local connections are closed.
func TestForwardInterrupted(t *testing.T) {
	s := newFakeSession(t, brokertest.Service(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) }))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- forwardConns(ctx, ln, s, io.Discard) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for s.streamCount() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("interrupted forward: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("forward did not stop on interrupt")
	}
	if s.Reason() != "client_closed" {
		t.Errorf("session reason %q, want client_closed", s.Reason())
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("local connection still open after forward stopped")
	}
}

// TestForwardStreamRefused: a stream the broker refuses closes that local
// connection and is reported; forwarding goes on.
func TestForwardStreamRefused(t *testing.T) {
	s := newFakeSession(t, "127.0.0.1:1")
	s.openErr = errors.New("dial failed on the device")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- forwardConns(ctx, ln, s, &stderr) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("refused connection was not closed")
	}
	c.Close()
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "dial failed on the device") {
		t.Errorf("stderr %q lacks the refusal", stderr.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
