package tunnel_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"unicode/utf8"

	"github.com/fieldpass/fieldpass/tunnel"
)

func TestHelloReplySettingsRoundTrip(t *testing.T) {
	for _, want := range []tunnel.HelloReply{
		{Code: tunnel.HelloOK},
		{Code: tunnel.HelloOK, KeepaliveSeconds: 120},
		{Code: tunnel.HelloOK, KeepaliveSeconds: 65535},
		{Code: tunnel.HelloRejected, Reason: "device id does not match the tunnel identity"},
	} {
		var buf bytes.Buffer
		if err := tunnel.WriteHelloReply(&buf, want); err != nil {
			t.Fatal(err)
		}
		buf.WriteString("yamux")
		got, err := tunnel.ReadHelloReply(&buf)
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if got != want {
			t.Errorf("got %+v, want %+v", got, want)
		}
		if rest := buf.String(); rest != "yamux" {
			t.Errorf("%+v: reply read consumed what follows: rest %q", want, rest)
		}
	}
	if err := tunnel.WriteHelloReply(io.Discard, tunnel.HelloReply{Code: tunnel.HelloOK, Reason: "x"}); err == nil {
		t.Error("WriteHelloReply: an ok with a reason was accepted")
	}
}

// v1ReadHelloReply is ReadHelloReply as connectors before settings have it:
// it reads "FR" 1 code rlen and rlen bytes of UTF-8, and ignores them on an
// ok. A reply from this broker must leave them nothing unread (it would
// reach yamux) and nothing they refuse.
func v1ReadHelloReply(r io.Reader) (code byte, err error) {
	var fixed [5]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return 0, err
	}
	if string(fixed[:2]) != "FR" || fixed[2] != 1 {
		return 0, errors.New("bad prefix")
	}
	b := make([]byte, fixed[4])
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, err
	}
	if !utf8.Valid(b) {
		return 0, errors.New("reason is not UTF-8")
	}
	return fixed[3], nil
}

func TestHelloReplyReadableByOldConnectors(t *testing.T) {
	for _, secs := range []uint16{0, 10, 128, 255, 3600, 65535} {
		var buf bytes.Buffer
		if err := tunnel.WriteHelloReply(&buf, tunnel.HelloReply{Code: tunnel.HelloOK, KeepaliveSeconds: secs}); err != nil {
			t.Fatal(err)
		}
		code, err := v1ReadHelloReply(&buf)
		if err != nil || code != byte(tunnel.HelloOK) {
			t.Errorf("keepalive %d: old connector reads code %d, err %v; want ok", secs, code, err)
		}
		if buf.Len() != 0 {
			t.Errorf("keepalive %d: %d bytes left for an old connector's yamux", secs, buf.Len())
		}
	}
	// And a reply from an old broker (an ok with no body) means no setting.
	got, err := tunnel.ReadHelloReply(bytes.NewReader([]byte("FR\x01\x00\x00")))
	if err != nil || got != (tunnel.HelloReply{Code: tunnel.HelloOK}) {
		t.Errorf("old broker's ok: got %+v, %v", got, err)
	}
}

func TestHelloReplySettingsDecode(t *testing.T) {
	reply := func(body string) []byte { return append([]byte{'F', 'R', 1, 0, byte(len(body))}, body...) }
	tests := []struct {
		name string
		body string
		want uint16
		err  bool
	}{
		{"keepalive", "keepalive=120", 120, false},
		{"unknown setting skipped", "mtu=1280 keepalive=30 future=x", 30, false},
		{"only unknown", "future=1", 0, false},
		{"zero", "keepalive=0", 0, true},
		{"leading zero", "keepalive=030", 0, true},
		{"too big", "keepalive=65536", 0, true},
		{"negative", "keepalive=-5", 0, true},
		{"twice", "keepalive=30 keepalive=60", 0, true},
		{"no value", "keepalive", 0, true},
		{"no name", "=5", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tunnel.ReadHelloReply(bytes.NewReader(reply(tt.body)))
			if tt.err {
				if !errors.Is(err, tunnel.ErrProtocol) {
					t.Fatalf("got %+v, %v; want a protocol error", got, err)
				}
				return
			}
			if err != nil || got.KeepaliveSeconds != tt.want || got.Reason != "" {
				t.Fatalf("got %+v, %v; want keepalive %d", got, err, tt.want)
			}
		})
	}
}

func TestControlRoundTrip(t *testing.T) {
	for _, want := range []tunnel.Control{{}, {KeepaliveSeconds: 120}, {KeepaliveSeconds: 65535}} {
		var buf bytes.Buffer
		if err := tunnel.WriteControl(&buf, want); err != nil {
			t.Fatal(err)
		}
		if buf.Len() != 5 {
			t.Errorf("control is %d bytes, want 5", buf.Len())
		}
		buf.WriteString("rest")
		got, err := tunnel.ReadStreamOpen(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if got.Control == nil || *got.Control != want {
			t.Errorf("ReadStreamOpen: got %+v, want control %+v", got, want)
		}
		if rest := buf.String(); rest != "rest" {
			t.Errorf("consumed past the control: rest %q", rest)
		}
	}
	for _, tt := range []struct {
		name    string
		in      string
		version bool
	}{
		{"truncated", "FC\x01\x00", false},
		{"other version", "FC\x02\x00\x78", true},
		{"bad magic", "FX\x01\x00\x78", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tunnel.ReadControl(bytes.NewReader([]byte(tt.in)))
			if err == nil || errors.Is(err, tunnel.ErrVersion) != tt.version {
				t.Fatalf("err %v, want version error %v", err, tt.version)
			}
		})
	}
}

func TestStreamOpenHeader(t *testing.T) {
	want := tunnel.StreamHeader{SessionID: mustID(t, "0f8fad5b-d9cb-469f-a165-70867728950e"), Service: "ssh"}
	var buf bytes.Buffer
	tunnel.WriteStreamHeader(&buf, want)
	buf.WriteString("payload")
	got, err := tunnel.ReadStreamOpen(&buf)
	if err != nil || got.Control != nil || got.Header != want {
		t.Fatalf("got %+v, %v; want header %+v", got, err, want)
	}
	if rest := buf.String(); rest != "payload" {
		t.Fatalf("consumed payload: rest %q", rest)
	}
}

// An old connector reads a control stream as a stream header: the broker
// half-closes after the 5 bytes, so it fails at once with a protocol
// error (and answers bad header) instead of waiting out its deadline.
func TestControlToOldConnector(t *testing.T) {
	var buf bytes.Buffer
	tunnel.WriteControl(&buf, tunnel.Control{KeepaliveSeconds: 120})
	_, err := tunnel.ReadStreamHeader(&buf)
	if !errors.Is(err, tunnel.ErrProtocol) {
		t.Fatalf("old connector's read: got %v, want a protocol error", err)
	}
}
