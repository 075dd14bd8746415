package fieldpass_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/fieldpass/fieldpass"
)

func TestTunnelAddress(t *testing.T) {
	p := netip.MustParsePrefix("10.77.0.0/16")
	if got := fieldpass.BrokerTunnelAddress(p); got.String() != "10.77.0.1" {
		t.Fatalf("broker address %s, want 10.77.0.1", got)
	}
	for n, want := range map[int64]string{0: "10.77.0.2", 253: "10.77.0.255", 254: "10.77.1.0", 65532: "10.77.255.254"} {
		got, err := fieldpass.TunnelAddress(p, n)
		if err != nil || got.String() != want {
			t.Errorf("TunnelAddress(%d) = %s, %v; want %s", n, got, err, want)
		}
	}
	if _, err := fieldpass.TunnelAddress(p, 65533); fieldpass.ErrorCode(err) != fieldpass.EUNAVAILABLE {
		t.Errorf("past the end: err %v, want unavailable", err)
	}
	if _, err := fieldpass.TunnelAddress(p, -1); err == nil {
		t.Error("negative index accepted")
	}
}

func TestValidation(t *testing.T) {
	for _, ok := range []string{"pump-7", "a", "x1"} {
		if err := fieldpass.ValidateDeviceName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "Pump", "a_b", "a.b", string(make([]byte, 64))} {
		if err := fieldpass.ValidateDeviceName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, _, err := fieldpass.ParseLabel("site=north"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"site", "=x", "Site=x", "site=a b"} {
		if _, _, err := fieldpass.ParseLabel(bad); err == nil {
			t.Errorf("label %q accepted", bad)
		}
	}
	for _, bad := range []string{"", "fpe_short", "xxx_" + string(make([]byte, 43))} {
		if err := fieldpass.CheckEnrollmentToken(bad); err == nil {
			t.Errorf("token %q accepted", bad)
		}
	}
	if err := fieldpass.CheckEnrollmentToken(fieldpass.FormatEnrollmentToken([32]byte{1})); err != nil {
		t.Error(err)
	}
}

func TestErrorfKeepsCause(t *testing.T) {
	err := fieldpass.Errorf(fieldpass.EUNAVAILABLE, "cannot reach the broker: %w", context.DeadlineExceeded)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the %w cause is lost")
	}
	if got := fieldpass.ErrorMessage(err); got != "cannot reach the broker: context deadline exceeded" {
		t.Fatalf("message %q", got)
	}
	if errors.Unwrap(fieldpass.Errorf(fieldpass.EINVALID, "no cause %v", 1)) != nil {
		t.Fatal("an error without %w has a cause")
	}
}
