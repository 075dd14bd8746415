package apiserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
)

// A grant naming a device that is not enrolled is refused, saying how to
// mean it; with allow_unknown it is made (for a device enrolled later).
func TestGrantUnknownDeviceRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	admin := f.client(kAdmin)
	body := httpapi.GrantCreate{Subject: people[kEngineer], Devices: []string{"alpha", "no-such"}, Services: []string{"ssh"},
		Duration: "1h", Reason: "typo"}
	_, err := admin.CreateGrant(ctx, body)
	wantCode(t, err, fieldpass.EINVALID, "no enrolled device named no-such")
	if !strings.Contains(err.Error(), "--allow-unknown") {
		t.Errorf("refusal %q does not say how to grant a device enrolled later", err)
	}
	// Decommissioned counts as unknown.
	body.Devices = []string{"gamma"}
	_, err = admin.CreateGrant(ctx, body)
	wantCode(t, err, fieldpass.EINVALID, "no enrolled device named gamma")

	// Days are a duration the API takes too, as the CLI does.
	body.Devices, body.AllowUnknown, body.Duration = []string{"no-such"}, true, "2d"
	g := must(admin.CreateGrant(ctx, body))(t)
	if len(g.Devices) != 1 || g.Devices[0] != "no-such" || g.End.Sub(g.Start) != 48*time.Hour {
		t.Fatalf("grant with allow_unknown: %+v", g)
	}
}
