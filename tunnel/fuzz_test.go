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
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		s, err := tunnel.ReadStreamStatus(r)
		if err != nil {
			return
		}
		consumed := len(in) - r.Len()
		var out bytes.Buffer
		tunnel.WriteStreamStatus(&out, s)
		if !bytes.Equal(out.Bytes(), in[:consumed]) {
			t.Fatalf("re-encoding differs: %x vs %x", out.Bytes(), in[:consumed])
		}
	})
}

func FuzzReadHello(f *testing.F) {
	var b bytes.Buffer
	tunnel.WriteHello(&b, tunnel.Hello{ConnectorVersion: "v1.0.0", KeepaliveSeconds: 25})
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
