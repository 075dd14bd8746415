package tunnel_test

import (
	"bytes"
	"errors"
	"io"
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
	if got != want {
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
