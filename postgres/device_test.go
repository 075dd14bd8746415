package postgres_test

import (
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

func TestSetDeviceState(t *testing.T) {
	t.Parallel()
	const (
		active         = fieldpass.DeviceActive
		disabled       = fieldpass.DeviceDisabled
		decommissioned = fieldpass.DeviceDecommissioned
	)
	tests := []struct {
		name      string
		path      []fieldpass.DeviceState // applied after enrolment, each must succeed
		to        fieldpass.DeviceState
		code, msg string // want an error
	}{
		{name: "disable", to: disabled},
		{name: "enable", path: []fieldpass.DeviceState{disabled}, to: active},
		{name: "decommission active", to: decommissioned},
		{name: "decommission disabled", path: []fieldpass.DeviceState{disabled}, to: decommissioned},
		{name: "active again", to: active},
		{name: "disabled again", path: []fieldpass.DeviceState{disabled}, to: disabled},
		{name: "enable decommissioned", path: []fieldpass.DeviceState{decommissioned}, to: active,
			code: fieldpass.EINVALID, msg: "was decommissioned, which is final"},
		{name: "disable decommissioned", path: []fieldpass.DeviceState{decommissioned}, to: disabled,
			code: fieldpass.EINVALID, msg: "was decommissioned, which is final"},
		{name: "decommission twice", path: []fieldpass.DeviceState{decommissioned}, to: decommissioned,
			code: fieldpass.ECONFLICT, msg: "already decommissioned"},
		{name: "unknown state", to: "retired", code: fieldpass.EINVALID, msg: `invalid device state "retired"`},
	}
	s := mustOpen(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := devName(i)
			before := s.mustEnroll(t, name, i)
			for _, state := range tt.path {
				s.mustSetState(t, name, state)
			}
			got, err := s.SetDeviceState(t.Context(), name, tt.to)
			if tt.code != "" {
				wantError(t, err, tt.code, tt.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := *before
			want.State = tt.to
			if tt.to == decommissioned {
				want.PublicKey = ""
			}
			checkDevice(t, "SetDeviceState", got, &want)
			stored, err := s.DeviceByID(t.Context(), before.ID)
			if err != nil {
				t.Fatal(err)
			}
			checkDevice(t, "DeviceByID", stored, &want)
		})
	}

	t.Run("unknown device", func(t *testing.T) {
		_, err := s.SetDeviceState(t.Context(), "nobody", disabled)
		wantError(t, err, fieldpass.ENOTFOUND, `device "nobody" not found`)
	})
	t.Run("bad name", func(t *testing.T) {
		_, err := s.SetDeviceState(t.Context(), "No Body", disabled)
		wantError(t, err, fieldpass.EINVALID, "invalid device name")
	})
}

func devName(i int) string { return "dev-" + string(rune('a'+i)) }

func TestDevices(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	for i, name := range []string{"charlie", "alpha", "bravo", "delta"} {
		s.mustEnroll(t, name, i)
	}
	s.mustSetState(t, "bravo", fieldpass.DeviceDisabled)
	s.mustSetState(t, "delta", fieldpass.DeviceDecommissioned)

	names := func(devs []*fieldpass.Device) []string {
		var out []string
		for _, d := range devs {
			out = append(out, d.Name)
		}
		return out
	}
	devs, err := s.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(devs), []string{"alpha", "bravo", "charlie"}; !equal(got, want) {
		t.Errorf("Devices: got %v, want %v", got, want)
	}
	peers, err := s.PeerDevices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(peers), []string{"alpha", "charlie"}; !equal(got, want) {
		t.Errorf("PeerDevices: got %v, want %v", got, want)
	}

	_, err = s.Device(ctx, "delta")
	wantError(t, err, fieldpass.ENOTFOUND, `device "delta" not found`)
	_, err = s.Device(ctx, "Delta!")
	wantError(t, err, fieldpass.EINVALID, "invalid device name")
	_, err = s.DeviceByID(ctx, "00000000-0000-0000-0000-000000000000")
	wantError(t, err, fieldpass.ENOTFOUND, "not found")
	_, err = s.DeviceByID(ctx, "delta")
	wantError(t, err, fieldpass.EINVALID, "invalid device id")
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPresence(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	a := s.mustEnroll(t, "a", 1)
	b := s.mustEnroll(t, "b", 2)
	c := s.mustEnroll(t, "c", 3)

	seen := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)
	pa := fieldpass.Presence{Online: true, LastSeen: seen, Endpoint: "203.0.113.7:51820", ConnectorVersion: "v1.1.0", BrokerID: "broker-1"}
	pb := fieldpass.Presence{Online: true, LastSeen: seen, Endpoint: "[2001:db8::1]:4500", ConnectorVersion: "v1.1.0", BrokerID: "broker-1"}
	pc := fieldpass.Presence{Online: true, LastSeen: seen, Endpoint: "198.51.100.1:1", ConnectorVersion: "v1.0.0", BrokerID: "broker-2"}
	for _, u := range []struct {
		dev *fieldpass.Device
		p   fieldpass.Presence
	}{{a, pa}, {b, pb}, {c, pc}} {
		if err := s.UpdatePresence(ctx, u.dev.ID, u.p); err != nil {
			t.Fatalf("UpdatePresence(%s): %v", u.dev.Name, err)
		}
	}
	got, err := s.Device(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	want := *a
	want.Presence = pa
	checkDevice(t, "after UpdatePresence", got, &want)

	if err := s.MarkBrokerOffline(ctx, "broker-1"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		online bool
	}{{"a", false}, {"b", false}, {"c", true}} {
		got, err := s.Device(ctx, tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if got.Presence.Online != tt.online || !got.Presence.LastSeen.Equal(seen) {
			t.Errorf("%s after MarkBrokerOffline(broker-1): got online %v last seen %v, want online %v last seen %v",
				tt.name, got.Presence.Online, got.Presence.LastSeen, tt.online, seen)
		}
	}

	t.Run("invalid", func(t *testing.T) {
		for _, tt := range []struct {
			name, id string
			p        fieldpass.Presence
			code     string
		}{
			{"bad id", "a", pa, fieldpass.EINVALID},
			{"unknown id", "00000000-0000-0000-0000-000000000000", pa, fieldpass.ENOTFOUND},
			{"bad endpoint", a.ID, fieldpass.Presence{Endpoint: "203.0.113.7:51820\n"}, fieldpass.EINVALID},
			{"bad broker id", a.ID, fieldpass.Presence{BrokerID: "broker 1"}, fieldpass.EINVALID},
		} {
			t.Run(tt.name, func(t *testing.T) {
				err := s.UpdatePresence(ctx, tt.id, tt.p)
				if got := fieldpass.ErrorCode(err); got != tt.code {
					t.Errorf("got %v, want code %s", err, tt.code)
				}
			})
		}
		err := s.MarkBrokerOffline(ctx, "")
		wantError(t, err, fieldpass.EINVALID, "empty broker id")
	})
}
