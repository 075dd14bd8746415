package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
)

func (e *env) devices(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "history" {
		return e.deviceHistory(ctx, args[1:])
	}
	fs := e.flagSet("devices [--json]", `Lists the devices you may reach now, whether they are online, when your
grant on each ends, and the services it gives. Admins and auditors see
every device.

"fieldpass devices history NAME" shows a device's connectivity history.`)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	devs, err := cl.Devices(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, devs)
	}
	if len(devs) == 0 {
		// A header over nothing leaves a person wondering what to do.
		fmt.Fprintln(e.stdout, `No device you may reach now. Ask for access with
  fieldpass request create --device NAME --service ssh --duration 4h --reason "why" --wait`)
		return nil
	}
	return writeDevices(e.stdout, devs, e.now())
}

func (e *env) deviceHistory(ctx context.Context, args []string) error {
	fs := e.flagSet("devices history NAME [--since 24h] [--limit N] [--json]",
		`Shows a device's connectivity history, newest first: online, offline,
endpoint changes (roaming), connector version changes, suspected clones.
Auditors and admins only. --since is an RFC 3339 time, a duration ago
(24h, 7d), or 0 for all of it.

Example:
  fieldpass devices history pump-7 --since 7d`)
	since := fs.String("since", "24h", "only events since `T`")
	limit := fs.Int("limit", 0, fmt.Sprintf("at most `N` events (default %d, at most 1000)", fieldpass.DefaultDeviceHistoryLimit))
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if err := fieldpass.ValidateDeviceName(pos[0]); err != nil {
		return fs.fail("%s", message(err))
	}
	if *limit < 0 || *limit > 1000 {
		return fs.fail("--limit %d: want 1 to 1000", *limit)
	}
	var from time.Time
	if s := strings.TrimSpace(*since); s != "0" && s != "" {
		if from, err = parseSince(s, e.now()); err != nil {
			return fs.fail("--since: %v", err)
		}
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	evs, err := cl.DeviceHistory(ctx, pos[0], from, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		if evs == nil {
			evs = []*fieldpass.DeviceEvent{}
		}
		return writeJSON(e.stdout, evs)
	}
	return writeHistory(e.stdout, evs)
}

func writeHistory(w io.Writer, evs []*fieldpass.DeviceEvent) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tKIND\tENDPOINT\tVERSION\tBROKER")
	for _, ev := range evs {
		endpoint := or(ev.Endpoint, "-")
		if ev.PreviousEndpoint != "" {
			endpoint = ev.PreviousEndpoint + " -> " + endpoint
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ts(ev.At), ev.Kind, endpoint,
			or(ev.ConnectorVersion, "-"), or(ev.BrokerID, "-"))
	}
	return tw.Flush()
}
