package tunnel

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// yamux's frame header (hashicorp/yamux spec.md): version(1) type(1)
// flags(2) stream_id(4) length(4). Only a data frame has a body.
const (
	yamuxHeaderSize       = 12
	yamuxTypeData         = 0
	yamuxTypeWindowUpdate = 1
	yamuxFlagSYN          = 1
	yamuxFlagACK          = 2
	// coalesceMax is the largest body sent in one write with its header:
	// header and body then fit one TLS record (16 KiB). A larger body is
	// written after its header, as yamux does, rather than copied: its
	// header's write is small beside it.
	coalesceMax = 16<<10 - yamuxHeaderSize
)

// CoalesceFrames wraps the connection a yamux session runs on so that each
// small data frame (up to 16 KiB) leaves in one write with its header.
// yamux writes a frame's 12-byte header and its body as two writes: over
// TLS two records and two system calls, inside WireGuard two TCP segments,
// so two packets to encrypt and send, where one would do.
//
// With hold > 0 it also holds the window update that opens a stream (SYN)
// or accepts one (ACK), for at most hold, so that it leaves with the next
// frame: the broker's open with the stream's header, the connector's
// acceptance with its answer. Use it only where such a frame is soon
// followed by another (the stream's opener writes at once; the acceptor
// answers); past hold it leaves alone.
//
// It relies on yamux's send loop being the only writer: a data frame's
// header (type data, length > 0) is always followed at once by its body.
// A net.Conn stays one (deadlines, addresses).
func CoalesceFrames(c io.ReadWriteCloser, hold time.Duration) io.ReadWriteCloser {
	fc := &frameConn{ReadWriteCloser: c, hold: hold}
	if nc, ok := c.(net.Conn); ok {
		return &frameNetConn{frameConn: fc, Conn: nc}
	}
	return fc
}

// OpenHold is the hold for CoalesceFrames where a stream's opening or
// acceptance is followed within microseconds (the broker's header) or a
// local dial (the connector's answer).
const OpenHold = time.Millisecond

type frameConn struct {
	io.ReadWriteCloser
	hold time.Duration

	// mu guards what follows: yamux's send loop writes, and so does the
	// timer that sends a held frame (hold > 0 only).
	mu sync.Mutex
	// buf holds frames not yet written: held SYN or ACK window updates,
	// then possibly a data frame's header waiting for its body (held).
	// It is made at the first frame held (makeBuf), not with the connection:
	// a broker holds thousands of idle devices' connections that carry no
	// stream for days, and 16 KiB each was a fifth of its memory.
	buf   []byte
	held  bool
	timer *time.Timer
	err   error // of a write by the timer, for the next Write
}

func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.held {
		// The body of the held data frame.
		c.held = false
		c.buf = append(c.buf, p...)
		return len(p), c.flush()
	}
	if len(p) == yamuxHeaderSize {
		switch typ, flags := p[1], binary.BigEndian.Uint16(p[2:]); {
		case typ == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 && binary.BigEndian.Uint32(p[8:]) <= coalesceMax:
			c.makeBuf()
			c.buf = append(c.buf, p...)
			c.held = true
			return len(p), nil
		case c.hold > 0 && typ == yamuxTypeWindowUpdate && flags&(yamuxFlagSYN|yamuxFlagACK) != 0 && len(c.buf) < 64*yamuxHeaderSize:
			c.makeBuf()
			c.buf = append(c.buf, p...)
			if c.timer == nil {
				c.timer = time.AfterFunc(c.hold, c.flushHeld)
			} else {
				c.timer.Reset(c.hold)
			}
			return len(p), nil
		}
	}
	if len(c.buf) > 0 {
		if len(p) <= yamuxHeaderSize {
			c.buf = append(c.buf, p...)
			return len(p), c.flush()
		}
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return c.ReadWriteCloser.Write(p)
}

// makeBuf makes buf, once. The caller holds mu.
func (c *frameConn) makeBuf() {
	if c.buf == nil {
		c.buf = make([]byte, 0, yamuxHeaderSize+coalesceMax)
	}
}

// flush writes buf. The caller holds mu.
func (c *frameConn) flush() error {
	if c.timer != nil {
		c.timer.Stop()
	}
	_, err := c.ReadWriteCloser.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		c.err = err
	}
	return err
}

// flushHeld sends held window updates that no frame followed in time.
func (c *frameConn) flushHeld() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf) > 0 && !c.held && c.err == nil {
		c.flush()
	}
}

// frameNetConn is a frameConn over a net.Conn that is still a net.Conn.
type frameNetConn struct {
	*frameConn
	net.Conn
}

func (c *frameNetConn) Read(p []byte) (int, error)  { return c.Conn.Read(p) }
func (c *frameNetConn) Write(p []byte) (int, error) { return c.frameConn.Write(p) }
func (c *frameNetConn) Close() error                { return c.Conn.Close() }

// ErrPeerOpenedStream is the read error of a connection wrapped by
// RefuseStreamOpens once the peer has tried to open a stream.
var ErrPeerOpenedStream = errors.New("the peer opened a stream, which the protocol forbids")

// RefuseStreamOpens wraps the connection of a yamux session whose peer may
// not open streams (the connector, PROTOCOL.md): the read that brings a
// frame opening a stream (data or window update with SYN) fails with
// ErrPeerOpenedStream, so yamux ends the session before it buffers a byte
// of that stream, and onRefuse is called once. Frames are parsed as they
// pass, without copying. A net.Conn stays one.
//
// It lets the opener's yamux keep its default accept backlog, which in
// yamux v0.1.2 is also how many of its own stream opens may wait for their
// acknowledgement at once: with a backlog of one, streams opened together
// went to the device one round trip apart.
func RefuseStreamOpens(c net.Conn, onRefuse func()) net.Conn {
	return &openGuard{Conn: c, onRefuse: onRefuse}
}

type openGuard struct {
	net.Conn
	onRefuse func()
	hdr      [yamuxHeaderSize]byte
	have     int    // bytes of hdr filled
	skip     uint32 // body bytes of the current data frame still to pass
	refused  bool
}

func (g *openGuard) Read(p []byte) (int, error) {
	if g.refused {
		return 0, ErrPeerOpenedStream
	}
	n, err := g.Conn.Read(p)
	for b := p[:n]; len(b) > 0; {
		if g.skip > 0 {
			k := min(uint32(len(b)), g.skip)
			g.skip -= k
			b = b[k:]
			continue
		}
		k := copy(g.hdr[g.have:], b)
		g.have += k
		b = b[k:]
		if g.have < yamuxHeaderSize {
			break
		}
		g.have = 0
		typ, flags := g.hdr[1], binary.BigEndian.Uint16(g.hdr[2:])
		if (typ == yamuxTypeData || typ == yamuxTypeWindowUpdate) && flags&yamuxFlagSYN != 0 {
			g.refused = true
			if g.onRefuse != nil {
				g.onRefuse()
			}
			return 0, ErrPeerOpenedStream
		}
		if typ == yamuxTypeData {
			g.skip = binary.BigEndian.Uint32(g.hdr[8:])
		}
	}
	return n, err
}
