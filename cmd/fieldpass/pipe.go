package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
)

// session is one recorded session to a device's service, as proxy and
// forward use it: *httpapi.Conn through connectSession, or a test's fake.
type session interface {
	// OpenStream opens one connection to the service inside the session.
	OpenStream() (tunnel.HalfCloser, error)
	// Close ends the session from our side (client_closed).
	Close() error
	// Done is closed when the session ends; Reason then says why.
	Done() <-chan struct{}
	Reason() string
}

// endGrace is how long proxy waits, after its stream ended, for the
// session to say whether the broker cut it: a cut closes the stream a
// moment before the session's end reason arrives.
const endGrace = 300 * time.Millisecond

// endedError reports a session that ended without our closing it: the
// broker's reason, or a lost connection when the broker gave none.
func endedError(reason string) error {
	switch reason {
	case string(fieldpass.EndClientClosed):
		return nil
	case "":
		return errors.New("session ended: the connection to the broker was lost")
	}
	return fmt.Errorf("session ended: %s", reason)
}

// pipeStdio copies stdin to one stream in s and the stream to stdout
// until the device side ends, passing stdin's EOF on as a half-close. It
// returns the broker's reason when the session is cut, and nil when the
// stream ended normally or ctx ended (ssh hangs up on its ProxyCommand).
func pipeStdio(ctx context.Context, s session, stdin io.Reader, stdout io.Writer) error {
	defer s.Close()
	st, err := s.OpenStream()
	if err != nil {
		select {
		case <-s.Done():
			if e := endedError(s.Reason()); e != nil {
				return e
			}
		default:
		}
		return err
	}
	defer st.Close()

	// stdin may never reach EOF (a terminal): its goroutine is left to the
	// process's exit, and touches nothing after the stream is closed but
	// the stream itself.
	go func() {
		if _, err := io.Copy(st, stdin); err == nil {
			st.CloseWrite()
		} else {
			st.Close()
		}
	}()
	out := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdout, st)
		out <- err
	}()

	select {
	case err := <-out:
		// The device closed, or the stream broke: if the broker cut the
		// session, say so.
		t := time.NewTimer(endGrace)
		defer t.Stop()
		select {
		case <-s.Done():
			return endedError(s.Reason())
		case <-t.C:
		}
		if err != nil {
			return fmt.Errorf("stream: %w", err)
		}
		return nil
	case <-s.Done():
		st.Close()
		return endedError(s.Reason())
	case <-ctx.Done():
		return nil
	}
}

// forwardAddr is the local address forward listens on: loopback unless the
// person names another host. "8080" and ":8080" are 127.0.0.1:8080.
func forwardAddr(arg string) (string, error) {
	if arg == "" {
		return "127.0.0.1:0", nil
	}
	if !strings.Contains(arg, ":") {
		arg = ":" + arg
	}
	host, port, err := net.SplitHostPort(arg)
	if err != nil {
		return "", fmt.Errorf("invalid local address %q: want [HOST:]PORT", arg)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// isLoopbackAddr reports whether a listener on addr accepts only local
// connections.
func isLoopbackAddr(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// forwardConns carries each connection accepted on ln as one stream of s,
// until s ends (its reason is returned, nil for our own close) or ctx ends
// (nil). Streams live inside the one session: no new login or grant
// lookup per connection. It closes ln and every connection it took.
func forwardConns(ctx context.Context, ln net.Listener, s session, stderr io.Writer) error {
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		wg     sync.WaitGroup
		accept = make(chan error, 1)
	)
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				accept <- err
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				refused := func(err error) {
					// Say why before hanging up: whoever sees the close may
					// end the forward next.
					select {
					case <-s.Done():
					default:
						fmt.Fprintf(stderr, "fieldpass: connection from %s: %s\n", c.RemoteAddr(), message(err))
					}
					c.Close()
				}
				if eo, ok := s.(earlyOpener); ok {
					st, err := eo.OpenStreamEarly()
					if err != nil {
						refused(err)
						return
					}
					joinEarly(halfCloser(c), st, refused)
					return
				}
				st, err := s.OpenStream()
				if err != nil {
					refused(err)
					return
				}
				join(halfCloser(c), st)
			}()
		}
	}()

	var err error
	accepting := true
	select {
	case <-s.Done():
		err = endedError(s.Reason())
	case <-ctx.Done():
	case aerr := <-accept:
		accepting = false
		if !errors.Is(aerr, net.ErrClosed) {
			err = fmt.Errorf("accept: %w", aerr)
		}
	}
	ln.Close()
	if accepting {
		<-accept // no wg.Add after this, so Wait below is safe
	}
	// The local side first: ssh (or whatever is connected) learns of the
	// end at once, while closing the WebSocket may wait out its handshake.
	closeAll()
	s.Close()
	wg.Wait()
	return err
}

// halfCloser gives a local connection CloseWrite: TCP has it; others get
// a full close, which is the best they can do.
func halfCloser(c net.Conn) tunnel.HalfCloser {
	if hc, ok := c.(tunnel.HalfCloser); ok {
		return hc
	}
	return fullCloser{c}
}

type fullCloser struct{ net.Conn }

func (f fullCloser) CloseWrite() error { return f.Conn.Close() }

// earlyOpener is a session that opens a stream without waiting for the
// broker's answer (httpapi.Conn.OpenStreamEarly): the client's first bytes
// travel with the stream's opening, a round trip sooner.
type earlyOpener interface {
	OpenStreamEarly() (earlyStream, error)
}

// earlyStream is a stream whose Status waits for the broker's answer.
type earlyStream interface {
	tunnel.HalfCloser
	Status() error
}

// copyBufs are the 64 KiB buffers of join's copies (tunnel.Buffers).
var copyBufs = tunnel.NewBuffers(64 << 10)

// join is tunnel.Join through copyBufs.
func join(a, b tunnel.HalfCloser) { tunnel.JoinWith(a, b, copyBufs) }

// joinEarly is join for a stream opened early: bytes from local go out at
// once, and bytes from the stream only once the broker has answered; a
// refusal is handed to refused, after which both are closed.
func joinEarly(local tunnel.HalfCloser, st earlyStream, refused func(error)) {
	done := make(chan struct{})
	go func() {
		copyHalf(st, local)
		close(done)
	}()
	if err := st.Status(); err != nil {
		refused(err)
		local.Close()
		st.Close()
		<-done
		return
	}
	copyHalf(local, st)
	<-done
	local.Close()
	st.Close()
}

// copyHalf is tunnel.CopyHalf through copyBufs.
func copyHalf(dst, src tunnel.HalfCloser) { tunnel.CopyHalf(dst, src, copyBufs) }
