package tunnel

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
)

// yamux's frame header (hashicorp/yamux spec.md): version(1) type(1)
// flags(2) stream_id(4) length(4). Only a data frame has a body.
const (
	yamuxHeaderSize       = 12
	yamuxTypeData         = 0
	yamuxTypeWindowUpdate = 1
	yamuxFlagSYN          = 1
	// coalesceMax is the largest body sent in one write with its header:
	// header and body then fit one TLS record (16 KiB). A larger body is
	// written after its header, as yamux does, rather than copied: its
	// header's write is small beside it.
	coalesceMax = 16<<10 - yamuxHeaderSize
)

// CoalesceFrames wraps the connection a yamux session runs on so that each
// small data frame (up to 16 KiB) leaves in one write with its header. yamux writes a frame's
// 12-byte header and its body as two writes: over TLS two records and two
// system calls, inside WireGuard two TCP segments, so two packets to
// encrypt and send, where one would do.
//
// It relies on yamux's send loop being the only writer: a data frame's
// header (type data, length > 0) is always followed at once by its body.
// Not safe for concurrent writes. A net.Conn stays one (deadlines,
// addresses, CloseWrite where it has one).
func CoalesceFrames(c io.ReadWriteCloser) io.ReadWriteCloser {
	fc := &frameConn{ReadWriteCloser: c, buf: make([]byte, 0, yamuxHeaderSize+coalesceMax)}
	if nc, ok := c.(net.Conn); ok {
		return &frameNetConn{frameConn: fc, Conn: nc}
	}
	return fc
}

type frameConn struct {
	io.ReadWriteCloser
	held bool   // buf holds a data frame's header waiting for its body
	buf  []byte // cap yamuxHeaderSize+coalesceMax
}

func (c *frameConn) Write(p []byte) (int, error) {
	if !c.held {
		if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData {
			if n := binary.BigEndian.Uint32(p[8:]); n > 0 && n <= coalesceMax {
				c.buf = append(c.buf[:0], p...)
				c.held = true
				return len(p), nil
			}
		}
		return c.ReadWriteCloser.Write(p)
	}
	c.held = false
	c.buf = append(c.buf, p...)
	if _, err := c.ReadWriteCloser.Write(c.buf); err != nil {
		return 0, err
	}
	return len(p), nil
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
