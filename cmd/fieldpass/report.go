package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/fieldpass/fieldpass"
)

// report stale: what looks forgotten, for admins and auditors.

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
