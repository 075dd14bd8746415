package httpapi_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/hashicorp/yamux"

	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/tunnel"
)

// writes records each Write it is given.
type writes struct{ got [][]byte }

func (w *writes) Read([]byte) (int, error) { return 0, io.EOF }
func (w *writes) Write(p []byte) (int, error) {
	w.got = append(w.got, bytes.Clone(p))
	return len(p), nil
}
func (w *writes) Close() error { return nil }

func header(typ byte, length uint32) []byte {
	h := make([]byte, 12)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

func TestRawConnectConnCoalesces(t *testing.T) {
	big := make([]byte, 20000)
	for _, tc := range []struct {
		name   string
		writes [][]byte
		want   []int // the sizes of the writes that reach the connection
	}{
		{"small data frame: one write", [][]byte{header(0, 5), []byte("hello")}, []int{17}},
		{"window update: as is", [][]byte{header(1, 1<<20)}, []int{12}},
		{"data header without body (FIN): as is", [][]byte{header(0, 0)}, []int{12}},
		{"large body: header, then body", [][]byte{header(0, 20000), big}, []int{12, 20000}},
		{"one after another", [][]byte{header(0, 1), []byte("a"), header(1, 0), header(0, 2), []byte("bc")}, []int{13, 12, 14}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &writes{}
			c := httpapi.RawConnectConn(w)
			for _, p := range tc.writes {
				if n, err := c.Write(p); n != len(p) || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
				}
			}
			var sizes []int
			var all []byte
			for _, g := range w.got {
				sizes = append(sizes, len(g))
				all = append(all, g...)
			}
			if !bytes.Equal(all, bytes.Join(tc.writes, nil)) {
				t.Errorf("bytes on the connection differ from those written")
			}
			if len(sizes) != len(tc.want) {
				t.Fatalf("writes of %v bytes, want %v", sizes, tc.want)
			}
			for i := range sizes {
				if sizes[i] != tc.want[i] {
					t.Fatalf("writes of %v bytes, want %v", sizes, tc.want)
				}
			}
		})
	}
}

// TestRawConnectConnCarriesYamux: a yamux session over the wrapper on both
// ends carries small and large writes intact.
func TestRawConnectConnCarriesYamux(t *testing.T) {
	a, b := net.Pipe()
	client, err := yamux.Client(httpapi.RawConnectConn(a), tunnel.YamuxConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := yamux.Server(httpapi.RawConnectConn(b), tunnel.YamuxConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	go func() {
		st, err := server.AcceptStream()
		if err != nil {
			return
		}
		io.Copy(st, st)
		st.Close()
	}()
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("x")
	for _, n := range []int{100, 16 << 10, 1 << 20} {
		want = append(want, bytes.Repeat([]byte{byte(n)}, n)...)
	}
	go func() {
		st.Write(want[:1])
		st.Write(want[1:101])
		st.Write(want[101:])
		st.Close()
	}()
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("echo of %d bytes: got %d, %v", len(want), len(got), err)
	}
}
