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

// Buffers is a pool of copy buffers of one size, for Join and CopyHalf: a
// broker or a forward may carry thousands of short streams, and a fresh
// pair of buffers for each is garbage the collector must zero and sweep.
type Buffers struct {
	size int
	pool sync.Pool
}

// NewBuffers returns a pool of buffers of size bytes.
func NewBuffers(size int) *Buffers {
	b := &Buffers{size: size}
	b.pool.New = func() any { buf := make([]byte, size); return &buf }
	return b
}

// Get returns a buffer of the pool's size; Put it back when done.
func (b *Buffers) Get() *[]byte { return b.pool.Get().(*[]byte) }

// Put returns a buffer Get gave.
func (b *Buffers) Put(buf *[]byte) { b.pool.Put(buf) }

// joinBuffers serve Join: 32 KiB, small enough for a connector on a router.
var joinBuffers = NewBuffers(32 << 10)

// Join copies bytes both ways between a and b until both directions have
// ended, passing each direction's end on as a half-close so protocols that
// shut one side first (ssh, http/1.0) keep working. An error in either
// direction closes both. It returns the bytes copied each way.
func Join(a, b HalfCloser) (aToB, bToA int64) {
	return JoinWith(a, b, joinBuffers)
}

// JoinWith is Join copying through buffers from bufs.
func JoinWith(a, b HalfCloser, bufs *Buffers) (aToB, bToA int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		aToB = CopyHalf(b, a, bufs)
	}()
	bToA = CopyHalf(a, b, bufs)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA
}

// CopyHalf copies src to dst through a buffer from bufs until src ends,
// then half-closes dst; an error closes both. It returns the bytes copied.
//
// It starts with a small buffer and takes one from bufs only once a read
// fills the small one: most streams are short (a request, an echo, a
// keystroke) and a 32 or 64 KiB buffer for each is garbage the collector
// must handle, which a connector under its memory limit pays for at once.
func CopyHalf(dst, src HalfCloser, bufs *Buffers) int64 {
	small := smallBuffers.pool.Get().(*[]byte)
	defer smallBuffers.pool.Put(small)
	buf := *small
	var big *[]byte
	defer func() {
		if big != nil {
			bufs.pool.Put(big)
		}
	}()
	var n int64
	var err error
	for {
		// Not io.CopyBuffer: it would hand a TCP connection's ReadFrom and
		// WriteTo a buffer of their own, allocated each time, and it keeps
		// to one buffer.
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				err = werr
				break
			}
			if nr == len(buf) && big == nil && bufs.size > len(buf) {
				big = bufs.pool.Get().(*[]byte)
				buf = *big
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
	}
	if err == nil {
		dst.CloseWrite()
		return n
	}
	dst.Close()
	src.Close()
	return n
}

// smallBuffers start every CopyHalf.
var smallBuffers = NewBuffers(2 << 10)
