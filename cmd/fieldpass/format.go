package main

import (
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
)

// Output: tables for people (times in UTC, RFC 3339), --json for programs
// (the API's own objects, indented), --csv for spreadsheets (a header row,
// RFC 3339 times, encoding/csv quoting).

// writeJSON prints v indented; an empty list prints as [] (never null), so
// scripts can always iterate.
func writeJSON(w io.Writer, v any) error {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = []struct{}{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// ts renders a time for tables and CSV; "" for the zero time.
func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// or returns s, or dash when s is empty: tables keep their columns.
func or(s, dash string) string {
	if s == "" {
		return dash
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// left renders how long until t from now, for a person: "3h59m left".
func left(t, now time.Time) string {
	d := t.Sub(now)
	if d <= 0 {
		return "ended"
	}
	return formatDuration(d.Truncate(time.Minute)+time.Minute) + " left"
}

func writeDevices(w io.Writer, devs []httpapi.DeviceView, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tONLINE\tGRANT-ENDS\tSERVICES")
	for _, d := range devs {
		ends := "-"
		if !d.GrantEnds.IsZero() {
			ends = ts(d.GrantEnds) + " (" + left(d.GrantEnds, now) + ")"
		}
		online := yesNo(d.Online)
		if d.State != "" && d.State != string(fieldpass.DeviceActive) {
			online += " (" + d.State + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Name, online, ends, or(strings.Join(d.Services, ","), "-"))
	}
	return tw.Flush()
}

// grantState says where a grant stands at now; a revoked one says why,
// when its revoker did.
func grantState(g *fieldpass.Grant, now time.Time) string {
	switch {
	case g.Revoked() && g.RevokeReason != "":
		return "revoked: " + g.RevokeReason
	case g.Revoked():
		return "revoked"
	case !now.Before(g.End):
		return "expired"
	case now.Before(g.Start):
		return "scheduled"
	}
	return "active"
}

// grantDevices renders what a grant covers: its devices or its selector.
func grantDevices(g *fieldpass.Grant) string {
	if len(g.Selector) > 0 {
		return fieldpass.FormatLabels(g.Selector)
	}
	return strings.Join(g.Devices, ",")
}

func writeGrants(w io.Writer, gs []*fieldpass.Grant, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSUBJECT\tDEVICES\tSERVICES\tSTART\tEND\tSTATE\tREASON")
	for _, g := range gs {
		reason := g.Reason
		if g.Ticket != "" {
			reason = "[" + g.Ticket + "] " + reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.ID, g.Subject, grantDevices(g),
			strings.Join(g.Services, ","), ts(g.Start), ts(g.End), grantState(g, now), reason)
	}
	return tw.Flush()
}

func writeRequests(w io.Writer, rs []*fieldpass.AccessRequest) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tREQUESTER\tDEVICE\tSERVICE\tDURATION\tCREATED\tSTATUS\tDECIDED-BY\tREASON")
	for _, r := range rs {
		reason := r.Reason
		if r.Ticket != "" {
			reason = "[" + r.Ticket + "] " + reason
		}
		decided := or(r.DecidedBy, "-")
		if r.Comment != "" {
			decided += ": " + r.Comment // for a denial, why
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Requester, r.Device, r.Service,
			formatDuration(r.Duration), ts(r.CreatedAt), r.Status, decided, reason)
	}
	return tw.Flush()
}

func writeSessions(w io.Writer, ss []*fieldpass.Session) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tUSER\tDEVICE\tSERVICE\tSTART\tEND\tBYTES-IN\tBYTES-OUT\tRECONNECTS\tSTREAMS-CUT\tEND-REASON")
	for _, s := range ss {
		end, reason := ts(s.End), string(s.EndReason)
		if s.Open() {
			end, reason = "-", "(open)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", s.ID, s.User, s.Device, s.Service,
			ts(s.Start), end, s.BytesIn, s.BytesOut, s.DeviceReconnects, s.StreamsCut, or(reason, "-"))
	}
	return tw.Flush()
}

func writeSessionsCSV(w io.Writer, ss []*fieldpass.Session) error {
	return fieldpass.WriteSessionsCSV(w, ss)
}

// details renders an event's details as canonical JSON, one line.
func details(e fieldpass.AuditEvent) string {
	b, err := fieldpass.CanonicalAuditDetails(e.Details)
	if err != nil {
		return "{}"
	}
	return strings.TrimSpace(string(b))
}

func writeAudit(w io.Writer, evs []fieldpass.AuditEvent) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "SEQ\tAT\tACTOR\tACTION\tTARGET\tDETAILS")
	for _, e := range evs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, ts(e.At), e.Actor, e.Action, or(e.Target, "-"), details(e))
	}
	return tw.Flush()
}

var auditHeader = []string{"seq", "at", "actor", "action", "target", "details", "hash"}

func writeAuditCSV(w io.Writer, evs []fieldpass.AuditEvent) error {
	cw := csv.NewWriter(w)
	cw.Write(auditHeader)
	for _, e := range evs {
		cw.Write([]string{strconv.FormatInt(e.Seq, 10), ts(e.At), e.Actor, e.Action, e.Target, details(e), hex.EncodeToString(e.Hash)})
	}
	cw.Flush()
	return cw.Error()
}

// outputFlags are --json and --csv, at most one.
type outputFlags struct{ json, csv *bool }

func addOutputFlags(fs *flagSet) outputFlags {
	return outputFlags{
		json: fs.Bool("json", false, "print JSON"),
		csv:  fs.Bool("csv", false, "print CSV with a header row"),
	}
}

// checkQuery checks the flags list commands share and reads --since.
func (e *env) checkQuery(fs *flagSet, out outputFlags, since string, t *time.Time, limit int) error {
	if *out.json && *out.csv {
		return fs.fail("give --json or --csv, not both")
	}
	if limit < 0 || limit > 1000 {
		return fs.fail("--limit %d: want 1 to 1000", limit)
	}
	if since != "" {
		s, err := parseSince(since, e.now())
		if err != nil {
			return fs.fail("--since: %v", err)
		}
		*t = s
	}
	return nil
}
