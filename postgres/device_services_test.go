package postgres_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// A device's services are unknown until a connector says; what it says is
// kept, and a hello that says nothing keeps it. Disabled devices and those
// decommissioned lately (by the key they had) are barred peers.
func TestDeviceServicesAndBarred(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	dev := s.mustEnroll(t, "pump-7", 1)
	if dev.Services != nil {
		t.Fatalf("new device services %q, want unknown", dev.Services)
	}
	for _, set := range [][]string{{"ssh", "web"}, nil, {}} {
		if err := s.SetDeviceServices(ctx, dev.ID, set); err != nil {
			t.Fatal(err)
		}
		got, err := s.Device(ctx, "pump-7")
		if err != nil {
			t.Fatal(err)
		}
		want := set
		if set == nil {
			want = []string{"ssh", "web"} // nil: the hello did not say
		}
		if !reflect.DeepEqual(got.Services, want) || got.Services == nil {
			t.Fatalf("after %q: services %q, want %q", set, got.Services, want)
		}
	}
	if err := s.SetDeviceServices(ctx, dev.ID, []string{"Bad Name"}); fieldpass.ErrorCode(err) != fieldpass.EINVALID {
		t.Fatalf("invalid name: %v", err)
	}

	barred := func() []string {
		ds, err := s.BarredDevices(ctx, s.clock.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range ds {
			names = append(names, d.Name+":"+string(d.State)+":"+d.PublicKey)
		}
		return names
	}
	if b := barred(); len(b) != 0 {
		t.Fatalf("active device barred: %q", b)
	}
	if _, err := s.SetDeviceState(ctx, "pump-7", fieldpass.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	if b, want := barred(), []string{"pump-7:disabled:" + dev.PublicKey}; !reflect.DeepEqual(b, want) {
		t.Fatalf("barred %q, want %q", b, want)
	}
	if _, err := s.SetDeviceState(ctx, "pump-7", fieldpass.DeviceDecommissioned); err != nil {
		t.Fatal(err)
	}
	if b, want := barred(), []string{"pump-7:decommissioned:" + dev.PublicKey}; !reflect.DeepEqual(b, want) {
		t.Fatalf("barred %q, want %q (by its retired key)", b, want)
	}
	if d, err := s.BarredDevice(ctx, dev.ID, s.clock.Now().Add(-time.Hour)); err != nil || d == nil || d.PublicKey != dev.PublicKey {
		t.Fatalf("BarredDevice: %+v, %v", d, err)
	}
	// Decommissioned before since: no longer barred.
	if ds, err := s.BarredDevices(ctx, s.clock.Now().Add(time.Hour)); err != nil || len(ds) != 0 {
		t.Fatalf("decommissioned long ago still barred: %d, %v", len(ds), err)
	}
	// The key itself is free again: a new enrolment may use it.
	again := s.mustEnroll(t, "pump-7", 1)
	if again.PublicKey != dev.PublicKey {
		t.Fatalf("re-enrolled with key %s, want %s", again.PublicKey, dev.PublicKey)
	}
}
