package tunnel_test

import (
	"bytes"
	"testing"

	"github.com/fieldpass/fieldpass/tunnel"
)

// The decoders read bytes from the other end of the tunnel: whatever they are
// given, they must not panic, must not read past their message, and what they
// accept must encode back to the same bytes.

func FuzzReadStreamHeader(f *testing.F) {
	var b bytes.Buffer
	tunnel.WriteStreamHeader(&b, tunnel.StreamHeader{Service: "ssh"})
	f.Add(b.Bytes())
	f.Add([]byte("FS\x01"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := tunnel.ReadStreamHeader(r)
		if err != nil {
			return
		}
		consumed := len(in) - r.Len()
		var out bytes.Buffer
		if err := tunnel.WriteStreamHeader(&out, h); err != nil {
			t.Fatalf("accepted header %+v does not encode: %v", h, err)
		}
		if !bytes.Equal(out.Bytes(), in[:consumed]) {
			t.Fatalf("re-encoding differs: %x vs %x", out.Bytes(), in[:consumed])
		}
	})
}

func FuzzReadStreamStatus(f *testing.F) {
	var b bytes.Buffer
	tunnel.WriteStreamStatus(&b, tunnel.StreamStatus{Code: tunnel.StatusDialFailed, Reason: "connection refused"})
	f.Add(b.Bytes())
	b.Reset()
	tunnel.WriteStreamStatus(&b, tunnel.StreamStatus{Code: tunnel.StatusOK, Resets: true})
	f.Add(b.Bytes())
	f.Add([]byte("FA\x01\x00\x0cfuture reset"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		s, err := tunnel.ReadStreamStatus(r)
		if err != nil {
			return
		}
		if consumed := len(in) - r.Len(); consumed < 5 || consumed != 5+int(in[4]) {
			t.Fatalf("consumed %d bytes of a %d-byte status", consumed, 5+int(in[4]))
		}
		// Unknown capabilities of an OK are skipped, so re-encoding need
		// not give the same bytes; it must give the same status.
		var out bytes.Buffer
		if err := tunnel.WriteStreamStatus(&out, s); err != nil {
			t.Fatalf("accepted status %+v does not encode: %v", s, err)
		}
		again, err := tunnel.ReadStreamStatus(&out)
		if err != nil || again != s {
			t.Fatalf("re-encoding %+v decodes to %+v, %v", s, again, err)
		}
	})
}

func FuzzReadHello(f *testing.F) {
	var b bytes.Buffer
	tunnel.WriteHello(&b, tunnel.Hello{ConnectorVersion: "v1.0.0", KeepaliveSeconds: 25})
	f.Add(b.Bytes())
	b.Reset()
	tunnel.WriteHello(&b, tunnel.Hello{ConnectorVersion: "v1.0.0", KeepaliveSeconds: 25, Services: []string{"ssh", "web"}})
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := tunnel.ReadHello(r)
		if err != nil {
			return
		}
		consumed := len(in) - r.Len()
		var out bytes.Buffer
		if err := tunnel.WriteHello(&out, h); err != nil {
			t.Fatalf("accepted hello %+v does not encode: %v", h, err)
		}
		if !bytes.Equal(out.Bytes(), in[:consumed]) {
			t.Fatalf("re-encoding differs: %x vs %x", out.Bytes(), in[:consumed])
		}
	})
}

func FuzzReadHelloReply(f *testing.F) {
	for _, r := range []tunnel.HelloReply{
		{Code: tunnel.HelloOK},
		{Code: tunnel.HelloOK, KeepaliveSeconds: 120},
		{Code: tunnel.HelloDisabled, Reason: "device is disabled"},
	} {
		var b bytes.Buffer
		tunnel.WriteHelloReply(&b, r)
		f.Add(b.Bytes())
	}
	f.Add([]byte("FR\x01\x00\x1dfuture=1 keepalive=30 mtu=1280"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		reply, err := tunnel.ReadHelloReply(r)
		if err != nil {
			return
		}
		if consumed := len(in) - r.Len(); consumed < 5 || consumed != 5+int(in[4]) {
			t.Fatalf("consumed %d bytes of a %d-byte reply", consumed, 5+int(in[4]))
		}
		// Unknown settings are skipped, so re-encoding need not give the
		// same bytes; it must give the same reply.
		var out bytes.Buffer
		if err := tunnel.WriteHelloReply(&out, reply); err != nil {
			t.Fatalf("accepted reply %+v does not encode: %v", reply, err)
		}
		again, err := tunnel.ReadHelloReply(&out)
		if err != nil || again != reply {
			t.Fatalf("re-encoding %+v decodes to %+v, %v", reply, again, err)
		}
	})
}

func FuzzReadStreamOpen(f *testing.F) {
	var b bytes.Buffer
	tunnel.WriteControl(&b, tunnel.Control{KeepaliveSeconds: 120})
	f.Add(b.Bytes())
	b.Reset()
	tunnel.WriteStreamHeader(&b, tunnel.StreamHeader{Service: "ssh"})
	f.Add(b.Bytes())
	f.Add([]byte("FC\x01"))
	b.Reset()
	tunnel.WriteReset(&b, tunnel.Reset{StreamID: 5})
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		open, err := tunnel.ReadStreamOpen(r)
		if err != nil {
			return
		}
		consumed := len(in) - r.Len()
		var out bytes.Buffer
		switch {
		case open.Control != nil:
			err = tunnel.WriteControl(&out, *open.Control)
		case open.Reset != nil:
			err = tunnel.WriteReset(&out, *open.Reset)
		default:
			err = tunnel.WriteStreamHeader(&out, open.Header)
		}
		if err != nil {
			t.Fatalf("accepted %+v does not encode: %v", open, err)
		}
		if !bytes.Equal(out.Bytes(), in[:consumed]) {
			t.Fatalf("re-encoding differs: %x vs %x", out.Bytes(), in[:consumed])
		}
	})
}
