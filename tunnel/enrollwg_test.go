package tunnel_test

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
)

func TestEnrollmentKey(t *testing.T) {
	tok1 := fieldpass.FormatEnrollmentToken([32]byte{1})
	tok2 := fieldpass.FormatEnrollmentToken([32]byte{2})
	p1, pub1 := fieldpass.EnrollmentKey(tok1)
	p1again, pub1again := fieldpass.EnrollmentKey(tok1)
	if p1 != p1again || pub1 != pub1again {
		t.Fatal("one token gave two key pairs")
	}
	p2, pub2 := fieldpass.EnrollmentKey(tok2)
	if p1 == p2 || pub1 == pub2 {
		t.Fatal("two tokens gave the same key")
	}
	if p1[0]&7 != 0 || p1[31]&128 != 0 || p1[31]&64 == 0 {
		t.Errorf("private key not clamped: %x", p1)
	}
	// The public half is the X25519 public key of the private half.
	k, err := ecdh.X25519().NewPrivateKey(p1[:])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.PublicKey().Bytes(), pub1[:]) {
		t.Error("public key does not match the private key")
	}
	if bytes.Contains(pub1[:], []byte(tok1)[4:12]) {
		t.Error("public key carries the token")
	}
}

func TestEnrollAskRoundTrip(t *testing.T) {
	a := tunnel.EnrollAsk{PublicKey: [32]byte{9, 8, 7}, ConnectorVersion: "v0.4.0"}
	var b bytes.Buffer
	if err := tunnel.WriteEnrollAsk(&b, a); err != nil {
		t.Fatal(err)
	}
	b.WriteString("trailing")
	got, err := tunnel.ReadEnrollAsk(&b)
	if err != nil || got != a {
		t.Fatalf("got %+v, %v; want %+v", got, err, a)
	}
	if b.String() != "trailing" {
		t.Errorf("read past the message: %q left", b.String())
	}
	if err := tunnel.WriteEnrollAsk(&b, tunnel.EnrollAsk{ConnectorVersion: "bad\nversion"}); !errors.Is(err, tunnel.ErrProtocol) {
		t.Errorf("unprintable version: %v", err)
	}
}

func TestEnrollAnswerRoundTrip(t *testing.T) {
	for _, a := range []tunnel.EnrollAnswer{
		{OK: &tunnel.EnrollResponse{DeviceID: "d1", DeviceName: "pump-7", TunnelAddress: "10.77.0.2", BrokerAddress: "10.77.0.1",
			BrokerPort: 7070, BrokerKey: "k", Endpoints: []string{"192.0.2.1:51820"}, MTU: 1280}},
		{Error: &tunnel.ErrorResponse{Code: "conflict", Message: "enrolment token already used"}},
	} {
		var b bytes.Buffer
		if err := tunnel.WriteEnrollAnswer(&b, a); err != nil {
			t.Fatal(err)
		}
		got, err := tunnel.ReadEnrollAnswer(&b)
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Fatalf("got %+v, %v; want %+v", got, err, a)
		}
		if b.Len() != 0 {
			t.Errorf("%d bytes left", b.Len())
		}
	}
	if err := tunnel.WriteEnrollAnswer(&bytes.Buffer{}, tunnel.EnrollAnswer{}); !errors.Is(err, tunnel.ErrProtocol) {
		t.Errorf("empty answer: %v", err)
	}
	if _, err := tunnel.ReadEnrollAnswer(bytes.NewReader([]byte("FN\x01\x07\x00\x02{}"))); !errors.Is(err, tunnel.ErrProtocol) {
		t.Errorf("unknown code: %v", err)
	}
}

func FuzzReadEnrollAsk(f *testing.F) {
	var b bytes.Buffer
	tunnel.WriteEnrollAsk(&b, tunnel.EnrollAsk{PublicKey: [32]byte{1}, ConnectorVersion: "v1"})
	f.Add(b.Bytes())
	f.Add([]byte("FE\x01"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		a, err := tunnel.ReadEnrollAsk(r)
		if err != nil {
			return
		}
		consumed := len(in) - r.Len()
		var out bytes.Buffer
		if err := tunnel.WriteEnrollAsk(&out, a); err != nil {
			t.Fatalf("accepted ask %+v does not encode: %v", a, err)
		}
		if !bytes.Equal(out.Bytes(), in[:consumed]) {
			t.Fatalf("re-encoding differs: %x vs %x", out.Bytes(), in[:consumed])
		}
	})
}

func FuzzReadEnrollAnswer(f *testing.F) {
	var b bytes.Buffer
	tunnel.WriteEnrollAnswer(&b, tunnel.EnrollAnswer{OK: &tunnel.EnrollResponse{DeviceID: "x", Endpoints: []string{"a:1"}, MTU: 1280}})
	f.Add(b.Bytes())
	b.Reset()
	tunnel.WriteEnrollAnswer(&b, tunnel.EnrollAnswer{Error: &tunnel.ErrorResponse{Code: "expired", Message: "m"}})
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		a, err := tunnel.ReadEnrollAnswer(r)
		if err != nil {
			return
		}
		if consumed := len(in) - r.Len(); consumed != 6+int(in[4])<<8+int(in[5]) {
			t.Fatalf("consumed %d bytes of a message that says %d", consumed, 6+int(in[4])<<8+int(in[5]))
		}
		if (a.OK == nil) == (a.Error == nil) {
			t.Fatalf("answer is neither or both: %+v", a)
		}
		// JSON may be spelt many ways; what it says must survive.
		var out bytes.Buffer
		if err := tunnel.WriteEnrollAnswer(&out, a); err != nil {
			t.Fatalf("accepted answer does not encode: %v", err)
		}
		again, err := tunnel.ReadEnrollAnswer(&out)
		if err != nil || !reflect.DeepEqual(again, a) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, a)
		}
	})
}

func TestEnrollmentAddress(t *testing.T) {
	for _, tt := range []struct {
		prefix string
		seq    int64
		want   string
	}{
		{"10.77.0.0/16", 1, "10.77.255.254"},
		{"10.77.0.0/16", 2, "10.77.255.253"},
		{"10.77.0.0/16", 16384, "10.77.191.255"},
		{"10.77.0.0/16", 16385, "10.77.255.254"}, // round again
		{"10.77.0.0/24", 1, "10.77.0.254"},
		{"10.77.0.0/24", 65, "10.77.0.254"},
		{"fd00:77::/64", 1, "fd00:77::ffff:ffff:ffff:fffe"},
	} {
		got, err := tunnel.EnrollmentAddress(netip.MustParsePrefix(tt.prefix), tt.seq)
		if err != nil || got.String() != tt.want {
			t.Errorf("EnrollmentAddress(%s, %d) = %v, %v; want %s", tt.prefix, tt.seq, got, err, tt.want)
		}
	}
	if _, err := tunnel.EnrollmentAddress(netip.MustParsePrefix("10.0.0.0/30"), 1); err == nil {
		t.Error("a /30 has no room, yet got an address")
	}
	if _, err := tunnel.EnrollmentAddress(netip.MustParsePrefix("10.0.0.0/16"), 0); err == nil {
		t.Error("number 0 gave an address")
	}
}
