package httpapi

import (
	"encoding/binary"
	"io"
)

// yamux's frame header: version(1) type(1) flags(2) stream(4) length(4).
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// coalesceMax is the largest body sent in one write with its header:
	// it keeps header and body in one TLS record (16 KiB). A larger body
	// is written after its header, as yamux does, rather than copied.
	coalesceMax = 16<<10 - yamuxHeaderSize
)

// RawConnectConn wraps the connection of the raw connect transport
// (ConnectUpgrade) for yamux, on both ends. yamux writes each frame's
// header and body as two writes, which on TLS makes two records and two
// system calls per frame; for a small body (an ssh keystroke, a stream's
// first bytes, a 1-byte echo) this wrapper sends header and body in one.
//
// It relies on yamux's send loop, the only writer: a data frame's header
// (type data, length > 0) is always followed at once by its body. Not safe
// for concurrent writes.
func RawConnectConn(c io.ReadWriteCloser) io.ReadWriteCloser {
	return &frameConn{ReadWriteCloser: c}
}

type frameConn struct {
	io.ReadWriteCloser
	held []byte // a data frame's header waiting for its body, or empty
	buf  []byte
}

func (c *frameConn) Write(p []byte) (int, error) {
	if len(c.held) == 0 {
		if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData {
			if n := binary.BigEndian.Uint32(p[8:]); n > 0 && n <= coalesceMax {
				c.held = append(c.buf[:0], p...)
				return len(p), nil
			}
		}
		return c.ReadWriteCloser.Write(p)
	}
	c.buf = append(c.held, p...)
	c.held = nil
	if _, err := c.ReadWriteCloser.Write(c.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}
