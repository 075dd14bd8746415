package tunnel

import (
	"io"
	"sync"

	"github.com/hashicorp/yamux"
)

// HalfCloser is a byte stream whose write side can be closed alone.
// *net.TCPConn and gVisor's gonet.TCPConn are; a yamux stream is through
// YamuxStream.
type HalfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// YamuxStream adapts a yamux stream, whose Close is already a half-close
// (it sends FIN and keeps reading), to HalfCloser.
type YamuxStream struct{ *yamux.Stream }

// CloseWrite sends FIN; the stream is gone once the other side closes too.
func (s YamuxStream) CloseWrite() error { return s.Stream.Close() }

// Join copies bytes both ways between a and b until both directions have
// ended, passing each direction's end on as a half-close so protocols that
// shut one side first (ssh, http/1.0) keep working. An error in either
// direction closes both. It returns the bytes copied each way.
func Join(a, b HalfCloser) (aToB, bToA int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		aToB = pipe(b, a)
	}()
	go func() {
		defer wg.Done()
		bToA = pipe(a, b)
	}()
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA
}

func pipe(dst, src HalfCloser) int64 {
	n, err := io.CopyBuffer(dst, src, make([]byte, 32<<10))
	if err == nil {
		dst.CloseWrite()
		return n
	}
	dst.Close()
	src.Close()
	return n
}
