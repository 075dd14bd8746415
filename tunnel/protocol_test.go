package tunnel_test

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/tunnel"
)

func mustID(tb testing.TB, s string) tunnel.ID {
	tb.Helper()
	id, err := tunnel.ParseID(s)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

func TestIDRoundTrip(t *testing.T) {
	const s = "0f8fad5b-d9cb-469f-a165-70867728950e"
	if got := mustID(t, s).String(); got != s {
		t.Fatalf("got %q, want %q", got, s)
	}
	for _, bad := range []string{"", "0f8fad5b", "0f8fad5bxd9cb-469f-a165-70867728950e", "zz8fad5b-d9cb-469f-a165-70867728950e"} {
		if _, err := tunnel.ParseID(bad); err == nil {
			t.Errorf("ParseID(%q): no error", bad)
		}
	}
}

func TestStreamHeaderRoundTrip(t *testing.T) {
	want := tunnel.StreamHeader{SessionID: mustID(t, "0f8fad5b-d9cb-469f-a165-70867728950e"), Service: "ssh"}
	var buf bytes.Buffer
	if err := tunnel.WriteStreamHeader(&buf, want); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("payload")
	got, err := tunnel.ReadStreamHeader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if rest := buf.String(); rest != "payload" {
		t.Fatalf("header read consumed payload: rest %q", rest)
	}
}

func TestStreamHeaderDecodeErrors(t *testing.T) {
	valid := func() []byte {
		var b bytes.Buffer
		tunnel.WriteStreamHeader(&b, tunnel.StreamHeader{Service: "web"})
		return b.Bytes()
	}
	tests := []struct {
		name    string
		in      []byte
		version bool
	}{
		{"empty", nil, false},
		{"truncated fixed", valid()[:10], false},
		{"truncated name", valid()[:21], false},
		{"bad magic", append([]byte("XX"), valid()[2:]...), false},
		{"other version", func() []byte { b := valid(); b[2] = 9; return b }(), true},
		{"zero length name", func() []byte { b := valid(); b[19] = 0; return b[:20] }(), false},
		{"overlong name", func() []byte { b := valid(); b[19] = 200; return append(b, bytes.Repeat([]byte("a"), 200)...) }(), false},
		{"uppercase name", func() []byte { b := valid(); b[20] = 'W'; return b }(), false},
		{"nul in name", func() []byte { b := valid(); b[21] = 0; return b }(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tunnel.ReadStreamHeader(bytes.NewReader(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			if tt.version != errors.Is(err, tunnel.ErrVersion) {
				t.Fatalf("errors.Is(ErrVersion) = %v, want %v (err %v)", !tt.version, tt.version, err)
			}
			if tt.name != "empty" && !tt.version && !errors.Is(err, tunnel.ErrProtocol) {
				t.Fatalf("err %v does not wrap ErrProtocol", err)
			}
		})
	}
}

func TestWriteStreamHeaderRefusesBadService(t *testing.T) {
	for _, s := range []string{"", "SSH", strings.Repeat("a", 64), "a b", "é"} {
		if err := tunnel.WriteStreamHeader(io.Discard, tunnel.StreamHeader{Service: s}); err == nil {
			t.Errorf("WriteStreamHeader(%q): no error", s)
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	for _, want := range []tunnel.StreamStatus{
		{Code: tunnel.StatusOK},
		{Code: tunnel.StatusUnknownService, Reason: `service "x" is not exposed by this device`},
		{Code: tunnel.StatusDialFailed, Reason: strings.Repeat("é", 200)}, // truncated at a rune boundary
	} {
		var buf bytes.Buffer
		if err := tunnel.WriteStreamStatus(&buf, want); err != nil {
			t.Fatal(err)
		}
		got, err := tunnel.ReadStreamStatus(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if got.Code != want.Code || !strings.HasPrefix(want.Reason, got.Reason) || len(got.Reason) > tunnel.MaxReason {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
}

func TestHelloRoundTrip(t *testing.T) {
	want := tunnel.Hello{DeviceID: mustID(t, "0f8fad5b-d9cb-469f-a165-70867728950e"), ConnectorVersion: "1.2.3", KeepaliveSeconds: 25}
	var buf bytes.Buffer
	if err := tunnel.WriteHello(&buf, want); err != nil {
		t.Fatal(err)
	}
	got, err := tunnel.ReadHello(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if err := tunnel.WriteHello(io.Discard, tunnel.Hello{ConnectorVersion: "bad\nversion"}); err == nil {
		t.Fatal("WriteHello accepted a control character")
	}
	var rb bytes.Buffer
	tunnel.WriteHelloReply(&rb, tunnel.HelloReply{Code: tunnel.HelloDisabled, Reason: "device is disabled"})
	r, err := tunnel.ReadHelloReply(&rb)
	if err != nil || r.Code != tunnel.HelloDisabled || r.Reason != "device is disabled" {
		t.Fatalf("got %+v, %v", r, err)
	}
}

// A hello that announces services is version 2; one that does not stays
// byte for byte what connectors before announcements send, so brokers of
// either age read it.
func TestHelloServices(t *testing.T) {
	id := mustID(t, "0f8fad5b-d9cb-469f-a165-70867728950e")
	for _, tt := range []struct {
		name     string
		services []string
		version  byte
	}{
		{"unknown", nil, 1},
		{"none", []string{}, 2},
		{"two", []string{"ssh", "web-ui"}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := tunnel.Hello{DeviceID: id, ConnectorVersion: "1.2.3", KeepaliveSeconds: 25, Services: tt.services}
			var buf bytes.Buffer
			if err := tunnel.WriteHello(&buf, want); err != nil {
				t.Fatal(err)
			}
			if v := buf.Bytes()[2]; v != tt.version {
				t.Fatalf("version byte %d, want %d", v, tt.version)
			}
			buf.WriteString("yamux")
			got, err := tunnel.ReadHello(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) || (got.Services == nil) != (tt.services == nil) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
			if rest := buf.String(); rest != "yamux" {
				t.Fatalf("hello read consumed what follows: rest %q", rest)
			}
		})
	}
	valid := func() []byte {
		var b bytes.Buffer
		tunnel.WriteHello(&b, tunnel.Hello{ConnectorVersion: "v", Services: []string{"ssh"}})
		return b.Bytes()
	}
	for _, tt := range []struct {
		name string
		in   []byte
	}{
		{"truncated count", valid()[:23]},
		{"truncated name", valid()[:26]},
		{"zero length name", func() []byte { b := valid(); b[24] = 0; return b[:25] }()},
		{"too many", func() []byte { b := valid(); b[23] = tunnel.MaxServices + 1; return b }()},
		{"invalid name", func() []byte { b := valid(); b[25] = 'S'; return b }()},
		{"twice", append(func() []byte { b := valid(); b[23] = 2; return b }(), 3, 's', 's', 'h')},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if h, err := tunnel.ReadHello(bytes.NewReader(tt.in)); err == nil {
				t.Fatalf("accepted %+v", h)
			}
		})
	}
	if err := tunnel.WriteHello(io.Discard, tunnel.Hello{Services: []string{"ssh", "ssh"}}); err == nil {
		t.Fatal("WriteHello accepted a service twice")
	}
	// What a broker before announcements does with a version 2 hello: its
	// reader checks the version byte against 1 and refuses, so the
	// connector can fall back (connector.session1).
	b := valid()
	b[2] = 3
	if _, err := tunnel.ReadHello(bytes.NewReader(b)); !errors.Is(err, tunnel.ErrVersion) {
		t.Fatalf("version 3: err %v, want ErrVersion", err)
	}
}

func TestStreamStatusCapabilities(t *testing.T) {
	for _, want := range []tunnel.StreamStatus{{Code: tunnel.StatusOK}, {Code: tunnel.StatusOK, Resets: true}} {
		var buf bytes.Buffer
		if err := tunnel.WriteStreamStatus(&buf, want); err != nil {
			t.Fatal(err)
		}
		got, err := tunnel.ReadStreamStatus(&buf)
		if err != nil || got != want {
			t.Fatalf("got %+v, %v; want %+v", got, err, want)
		}
	}
	// Words it does not know are skipped: a newer connector may add some.
	got, err := tunnel.ReadStreamStatus(strings.NewReader("FA\x01\x00\x0cfuture reset"))
	if err != nil || got != (tunnel.StreamStatus{Code: tunnel.StatusOK, Resets: true}) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if err := tunnel.WriteStreamStatus(io.Discard, tunnel.StreamStatus{Code: tunnel.StatusOK, Reason: "x"}); err == nil {
		t.Fatal("an ok status with a reason was written")
	}
}

func TestReset(t *testing.T) {
	var buf bytes.Buffer
	if err := tunnel.WriteReset(&buf, tunnel.Reset{StreamID: 0x01020305}); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("rest")
	open, err := tunnel.ReadStreamOpen(&buf)
	if err != nil || open.Reset == nil || open.Reset.StreamID != 0x01020305 || open.Control != nil {
		t.Fatalf("got %+v, %v", open, err)
	}
	if rest := buf.String(); rest != "rest" {
		t.Fatalf("reset read consumed what follows: rest %q", rest)
	}
	// A connector before resets reads a Reset as a stream header, finds it
	// bad and answers so: it never mistakes it for a session's stream.
	buf.Reset()
	tunnel.WriteReset(&buf, tunnel.Reset{StreamID: 7})
	if _, err := tunnel.ReadStreamHeader(&buf); err == nil {
		t.Fatal("a reset decoded as a stream header")
	}
}
