package fieldpass_test

import (
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

func TestNormalizeEmail(t *testing.T) {
	for in, want := range map[string]string{
		" Alice@Example.COM ":  "alice@example.com",
		"a.b+c@sub.example.io": "a.b+c@sub.example.io",
		"bot@localhost":        "bot@localhost",
	} {
		if got, err := fieldpass.NormalizeEmail(in); err != nil || got != want {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "alice", "@example.com", "a@", "a@@b", "a b@example.com", "Alice <a@example.com>",
		"a@-x.com", "a@x..com", "a@x.com\nb", "a\x00@x.com"} {
		if _, err := fieldpass.NormalizeEmail(bad); fieldpass.ErrorCode(err) != fieldpass.EINVALID {
			t.Errorf("NormalizeEmail(%q): got %v, want invalid", bad, err)
		}
	}
}

func TestGrantCovers(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	end := start.Add(time.Hour)
	pump := &fieldpass.Device{Name: "pump-1", Labels: map[string]string{"site": "north", "kind": "pump"}}
	cam := &fieldpass.Device{Name: "cam-1", Labels: map[string]string{"site": "north"}}
	byName := fieldpass.Grant{Devices: []string{"pump-1"}, Services: []string{"ssh"}, Start: start, End: end}
	bySel := fieldpass.Grant{Selector: map[string]string{"site": "north", "kind": "pump"}, Services: []string{"ssh", "web"}, Start: start, End: end}
	revoked := byName
	revoked.RevokedAt, revoked.RevokedBy = start.Add(time.Minute), "x"
	empty := fieldpass.Grant{Selector: map[string]string{}, Services: []string{"ssh"}, Start: start, End: end}
	for _, tc := range []struct {
		name    string
		g       fieldpass.Grant
		d       *fieldpass.Device
		service string
		at      time.Time
		want    bool
	}{
		{"by name", byName, pump, "ssh", start, true},
		{"other device", byName, cam, "ssh", start, false},
		{"other service", byName, pump, "web", start, false},
		{"before start", byName, pump, "ssh", start.Add(-time.Nanosecond), false},
		{"last instant", byName, pump, "ssh", end.Add(-time.Nanosecond), true},
		{"at end", byName, pump, "ssh", end, false},
		{"selector", bySel, pump, "web", start, true},
		{"selector, label missing", bySel, cam, "web", start, false},
		{"before revocation", revoked, pump, "ssh", start, true},
		{"at revocation", revoked, pump, "ssh", start.Add(time.Minute), false},
		{"empty selector selects nothing", empty, pump, "ssh", start, false},
		{"nil device", byName, nil, "ssh", start, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.g.Covers(tc.d, tc.service, tc.at); got != tc.want {
				t.Errorf("Covers: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGrantLimits(t *testing.T) {
	var l fieldpass.GrantLimits
	if got := l.Max(nil); got != fieldpass.DefaultVendorMaxGrant {
		t.Errorf("vendor default: got %s", got)
	}
	l = fieldpass.GrantLimits{Vendor: time.Hour, ByRole: map[fieldpass.Role]time.Duration{fieldpass.RoleEngineer: 48 * time.Hour}}
	for _, tc := range []struct {
		roles []fieldpass.Role
		want  time.Duration
	}{
		{nil, time.Hour},
		{[]fieldpass.Role{fieldpass.RoleEngineer}, 48 * time.Hour},
		{[]fieldpass.Role{fieldpass.RoleEngineer, fieldpass.RoleAdmin}, fieldpass.DefaultMaxGrant},
	} {
		if got := l.Max(tc.roles); got != tc.want {
			t.Errorf("Max(%v): got %s, want %s", tc.roles, got, tc.want)
		}
	}
}
