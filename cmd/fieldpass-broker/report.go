package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fieldpass/fieldpass"
)

// daysFlag is a duration that also takes whole days ("30d").
type daysFlag struct{ d *time.Duration }

func (f daysFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return "" // no "(default 0s)" in help
	}
	return fieldpass.FormatDuration(*f.d)
}

func (f daysFlag) Set(v string) error {
	d, err := fieldpass.ParseDuration(v)
	if err != nil {
		return err
	}
	if d < 0 {
		return fmt.Errorf("invalid duration %q: want 0 or more", v)
	}
	*f.d = d
	return nil
}

// nameLast lets a command's NAME come before its flags (device history
// pump-7 --since 24h): the flag package stops at the first argument.
func nameLast(args []string) []string {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return append(append([]string{}, args[1:]...), args[0])
	}
	return args
}

func (e env) deviceHistory(ctx context.Context, args []string) error {
	fs := e.flagSet("device history", "device history NAME [--since 24h] [--json]\n\nShows the device's connectivity history, newest first: online, offline,\nendpoint changes (roaming), connector version changes, suspected clones.")
	dbURL := e.databaseFlag(fs)
	since := 24 * time.Hour
	fs.Var(daysFlag{&since}, "since", "how far back (a duration such as 36h, or days such as 30d; 0: all)")
	limit := fs.Int("limit", 0, fmt.Sprintf("at most this many events (default %d)", fieldpass.DefaultDeviceHistoryLimit))
	asJSON := fs.Bool("json", false, "print JSON (one array) instead of a table")
	if err := parse(fs, nameLast(args), 1); err != nil {
		return err
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	var from time.Time
	if since > 0 {
		from = time.Now().Add(-since)
	}
	evs, err := db.DeviceHistory(ctx, fs.Arg(0), from, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		if evs == nil {
			evs = []*fieldpass.DeviceEvent{}
		}
		return writeJSON(e, evs)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tKIND\tENDPOINT\tVERSION\tBROKER")
	for _, ev := range evs {
		endpoint := dash(ev.Endpoint)
		if ev.PreviousEndpoint != "" {
			endpoint = ev.PreviousEndpoint + " -> " + dash(ev.Endpoint)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ev.At.Local().Format(time.RFC3339), ev.Kind, endpoint,
			dash(ev.ConnectorVersion), dash(ev.BrokerID))
	}
	return tw.Flush()
}

func writeJSON(e env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJSONList prints list as one indented JSON array; an empty list is
// [] rather than null, so scripts can always iterate.
func writeJSONList[T any](e env, list []T) error {
	if list == nil {
		list = []T{}
	}
	return writeJSON(e, list)
}

// printList prints list as a JSON array with asJSON, otherwise as a table:
// header (tab-separated column names), then one row of cells per item.
func printList[T any](e env, asJSON bool, list []T, header string, row func(T) []string) error {
	if asJSON {
		return writeJSONList(e, list)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, item := range list {
		fmt.Fprintln(tw, strings.Join(row(item), "\t"))
	}
	return tw.Flush()
}

const reportUsage = "Usage: fieldpass-broker report stale [--not-seen 30d] [--no-session 90d] [--json]"

func (e env) report(ctx context.Context, args []string) error {
	return e.dispatch(ctx, args, reportUsage, "report", map[string]subcommand{
		"stale": e.reportStale,
	})
}

func (e env) reportStale(ctx context.Context, args []string) error {
	fs := e.flagSet("report stale", "report stale [--not-seen 30d] [--no-session 90d] [--json]\n\nLists what looks forgotten: devices not seen, devices nobody has opened a\nsession to, grants never used, vendor accounts with no live grant; each\nwith the command that acts on it.")
	dbURL := e.databaseFlag(fs)
	var opts fieldpass.StaleOptions
	opts.NotSeen, opts.NoSession = 30*24*time.Hour, 90*24*time.Hour
	fs.Var(daysFlag{&opts.NotSeen}, "not-seen", "devices last seen longer ago than this")
	fs.Var(daysFlag{&opts.NoSession}, "no-session", "devices with no session for this long")
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	rep, err := db.StaleReport(ctx, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e, rep)
	}
	sections := []struct {
		title string
		items []fieldpass.StaleItem
	}{
		{fmt.Sprintf("Devices not seen for %s", days(opts.NotSeen)), rep.NotSeen},
		{fmt.Sprintf("Devices with no session for %s", days(opts.NoSession)), rep.NoSession},
		{"Grants never used", rep.UnusedGrants},
		{"Vendor accounts with no live grant", rep.IdleVendors},
	}
	for i, s := range sections {
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		fmt.Fprintf(e.stdout, "%s: %d\n", s.title, len(s.items))
		if len(s.items) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TARGET\tDETAIL\tCOMMAND")
		for _, it := range s.items {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", it.Target, it.Detail, dash(it.Command))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func days(d time.Duration) string { return fieldpass.FormatDuration(d) }
