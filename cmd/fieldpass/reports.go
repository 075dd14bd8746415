package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
)

// Reports for admins and auditors: a device's connectivity history and
// what looks forgotten.

func (e *env) deviceHistory(ctx context.Context, args []string) error {
	fs := e.flagSet("devices history NAME [--since 24h] [--limit N] [--json]",
		`Shows a device's connectivity history, newest first: online, offline,
endpoint changes (roaming), connector version changes, suspected clones.
Auditors and admins only. --since is an RFC 3339 time, a duration ago
(24h, 7d), or 0 for all of it.

Example:
  fieldpass devices history pump-7 --since 7d`)
	since := fs.String("since", "24h", "only events since `T`")
	limit := fs.Int("limit", 0, fmt.Sprintf("at most `N` events (default %d, at most 1000)", fieldpass.DefaultHistoryLimit))
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

const reportSynopsis = `  fieldpass report stale [--not-seen 30d] [--no-session 90d] [--json]
`

func (e *env) report(ctx context.Context, args []string) error {
	return e.subcommand("report", reportSynopsis, args, map[string]func([]string) error{
		"stale": func(a []string) error { return e.reportStale(ctx, a) },
	})
}

func (e *env) reportStale(ctx context.Context, args []string) error {
	fs := e.flagSet("report stale [--not-seen 30d] [--no-session 90d] [--json]",
		`Lists what looks forgotten: devices not seen, devices nobody has opened a
session to, grants never used, vendor accounts with no live grant; each
with the command that acts on it. Auditors and admins only.`)
	notSeen := fs.String("not-seen", "30d", "devices last seen longer ago than `D` (e.g. 36h, 30d)")
	noSession := fs.String("no-session", "90d", "devices with no session for `D` (e.g. 90d)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	ns, err := parseDuration(*notSeen)
	if err != nil {
		return fs.fail("--not-seen: %v", err)
	}
	nss, err := parseDuration(*noSession)
	if err != nil {
		return fs.fail("--no-session: %v", err)
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	rep, err := cl.StaleReport(ctx, ns, nss)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, rep)
	}
	return writeStale(e.stdout, rep)
}

func writeStale(w io.Writer, rep *fieldpass.StaleReport) error {
	notSeen := time.Duration(rep.Options.NotSeenSeconds) * time.Second
	noSession := time.Duration(rep.Options.NoSessionSeconds) * time.Second
	sections := []struct {
		title string
		items []fieldpass.StaleItem
	}{
		{"Devices not seen for " + formatDuration(notSeen), rep.NotSeen},
		{"Devices with no session for " + formatDuration(noSession), rep.NoSession},
		{"Grants never used", rep.UnusedGrants},
		{"Vendor accounts with no live grant", rep.IdleVendors},
	}
	for i, s := range sections {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s: %d\n", s.title, len(s.items))
		if len(s.items) == 0 {
			continue
		}
		tw := newTable(w)
		fmt.Fprintln(tw, "  TARGET\tDETAIL\tCOMMAND")
		for _, it := range s.items {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", it.Target, it.Detail, or(it.Command, "-"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
