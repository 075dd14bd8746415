package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
)

const alertsUsage = `Usage:
  fieldpass-broker alerts list [--since 7d|TIME] [--limit N] [--json]
  fieldpass-broker alerts replay --alert-webhook URL --alert-secret-file FILE ID ...
  fieldpass-broker alerts replay --alert-webhook URL --alert-secret-file FILE --all [--since 7d|TIME]

Dead letters are the alerts serve gave up delivering to its webhook. List
them, then replay them once the webhook works again: each is re-sent under
its original X-Fieldpass-Delivery id, so a receiver that drops duplicates
by it drops a replay of an alert it did get. A replay the webhook accepted
is recorded (and audited): --all skips it next time.`

func (e env) alertCommands(ctx context.Context, args []string) error {
	return e.dispatch(ctx, args, alertsUsage, "alerts subcommand", map[string]subcommand{
		"list":   e.alertsList,
		"ls":     e.alertsList,
		"replay": e.alertsReplay,
	})
}

// sinceFlag is a point in time given as a duration back from now ("36h",
// "7d") or as a time ("2026-11-01", RFC 3339).
type sinceFlag struct{ t *time.Time }

func (f sinceFlag) String() string {
	if f.t == nil || f.t.IsZero() {
		return ""
	}
	return f.t.Format(time.RFC3339)
}

func (f sinceFlag) Set(v string) error {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			*f.t = t
			return nil
		}
	}
	var d time.Duration
	if err := (daysFlag{&d}).Set(v); err != nil {
		return fmt.Errorf("invalid --since %q: want a duration such as 36h or 7d, or a time such as 2026-11-01 or 2026-11-01T08:00:00Z", v)
	}
	*f.t = time.Now().Add(-d)
	return nil
}

// deadLetterOut is a dead letter as alerts list prints it.
type deadLetterOut struct {
	ID         string          `json:"id"`
	Kind       alerts.Kind     `json:"kind"`
	Summary    string          `json:"summary"`
	Attempts   int             `json:"attempts"`
	LastError  string          `json:"last_error"`
	CreatedAt  time.Time       `json:"created_at"`
	FailedAt   time.Time       `json:"failed_at"`
	Replays    int             `json:"replays"`
	ReplayedAt *time.Time      `json:"replayed_at,omitempty"`
	Payload    json.RawMessage `json:"payload"`
}

// summarize names what an alert is about: its device, and the person,
// subject or service in its details.
func summarize(payload []byte) string {
	var a alerts.Alert
	if json.Unmarshal(payload, &a) != nil {
		return "-"
	}
	var parts []string
	if a.Device != "" {
		parts = append(parts, a.Device)
	}
	for _, k := range []string{"subject", "user", "service", "offline_since"} {
		if v, ok := a.Details[k].(string); ok && v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	return dash(clip(strings.Join(parts, " "), 80))
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func (e env) alertsList(ctx context.Context, args []string) error {
	fs := e.flagSet("alerts list", "alerts list [--since 7d|TIME] [--limit N] [--json]\n\n"+
		"Shows the alerts the webhook never received (dead letters), newest first, with\n"+
		"whether and when each was replayed. The IDs are what alerts replay takes.")
	dbURL := e.databaseFlag(fs)
	var since time.Time
	fs.Var(sinceFlag{&since}, "since", "only those given up since then: a duration back (36h, 7d) or a time (2026-11-01, RFC 3339) (default: all)")
	limit := fs.Int("limit", 100, "at most this many, the newest (0: no limit)")
	asJSON := fs.Bool("json", false, "print JSON (one array, with each payload) instead of a table")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *limit < 0 {
		return usageError{Msg: "--limit: want 0 or more"}
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	letters, err := db.AlertDeadLetters(ctx, fieldpass.DeadLetterFilter{Since: since, Limit: *limit})
	if err != nil {
		return err
	}
	out := make([]deadLetterOut, len(letters))
	for i, d := range letters {
		out[i] = deadLetterOut{ID: d.ID, Kind: d.Kind, Summary: summarize(d.Payload), Attempts: d.Attempts, LastError: d.LastError,
			CreatedAt: d.CreatedAt, FailedAt: d.FailedAt, Replays: d.Replays, Payload: d.Payload}
		if !d.ReplayedAt.IsZero() {
			out[i].ReplayedAt = &d.ReplayedAt
		}
	}
	return printList(e, *asJSON, out, "ID\tKIND\tATTEMPTS\tFAILED AT\tLAST ERROR\tSUMMARY\tREPLAYED", func(d deadLetterOut) []string {
		replayed := "no"
		if d.ReplayedAt != nil {
			replayed = d.ReplayedAt.Local().Format(time.RFC3339)
			if d.Replays > 1 {
				replayed += " (" + strconv.Itoa(d.Replays) + " times)"
			}
		}
		return []string{d.ID, string(d.Kind), strconv.Itoa(d.Attempts), d.FailedAt.Local().Format(time.RFC3339),
			dash(clip(strings.ReplaceAll(d.LastError, "\t", " "), 60)), d.Summary, replayed}
	})
}

// parseWithArgs parses flags placed before, between or after the
// positional arguments (alerts replay ID --alert-webhook URL ID), which
// the flag package alone stops at.
func parseWithArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
}

func (e env) alertsReplay(ctx context.Context, args []string) error {
	fs := e.flagSet("alerts replay", "alerts replay --alert-webhook URL --alert-secret-file FILE (ID ... | --all [--since 7d|TIME])\n\n"+
		"Re-sends dead letters to the webhook, one attempt each, oldest first, signed with the\n"+
		"secret as serve signs alerts and under their original X-Fieldpass-Delivery id (receivers\n"+
		"drop duplicates by it). Each one the webhook accepts is recorded, and audited as\n"+
		"alert.replay: --all skips it next time; IDs given by name are re-sent even if replayed.\n"+
		"Exits non-zero if any was not accepted: run it again once the webhook is fixed.")
	dbURL := e.databaseFlag(fs)
	webhook := addAlertWebhookFlags(fs)
	all := fs.Bool("all", false, "replay every dead letter not replayed yet")
	var since time.Time
	fs.Var(sinceFlag{&since}, "since", "with --all: only those given up since then: a duration back (36h, 7d) or a time (default: all)")
	ids, err := parseWithArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *all && len(ids) > 0:
		fs.Usage()
		return usageError{Msg: "give dead letter IDs or --all, not both"}
	case !*all && len(ids) == 0:
		fs.Usage()
		return usageError{Msg: "give the IDs of dead letters to replay (alerts list shows them), or --all"}
	case !*all && !since.IsZero():
		return usageError{Msg: "--since goes with --all"}
	case *webhook.url == "":
		return usageError{Msg: "--alert-webhook is required: the URL to re-send to (as serve has it)"}
	}
	log, err := newLogger(e.stderr, "warn", "text")
	if err != nil {
		return err
	}
	cfg, err := webhook.config(log)
	if err != nil {
		return err
	}
	n, err := alerts.New(*cfg)
	if err != nil {
		return err
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	filter := fieldpass.DeadLetterFilter{IDs: ids}
	if *all {
		filter = fieldpass.DeadLetterFilter{Since: since, Unreplayed: true}
	}
	letters, err := db.AlertDeadLetters(ctx, filter)
	if err != nil {
		return err
	}
	if !*all {
		for _, id := range ids {
			if !slices.ContainsFunc(letters, func(d *fieldpass.DeadLetter) bool { return d.ID == id }) {
				return fieldpass.Errorf(fieldpass.ENOTFOUND, "no dead letter %q (alerts list shows them); nothing replayed", id)
			}
		}
	}
	if len(letters) == 0 {
		fmt.Fprintln(e.stdout, "no dead letters to replay")
		return nil
	}
	slices.Reverse(letters) // oldest first, the order they were raised in
	target := alerts.Redact(cfg.URL)
	failed, err := n.Replay(ctx, letters, db, e.operatorActor(), func(r alerts.ReplayResult) {
		what := fmt.Sprintf("%d/%d %s %s %s", r.N, r.Of, r.Letter.ID, r.Letter.Kind, summarize(r.Letter.Payload))
		switch {
		case r.Err == nil:
			fmt.Fprintf(e.stdout, "replayed %s\n", what)
		case r.Delivered:
			fmt.Fprintf(e.stdout, "failed   %s: delivered but not recorded as replayed: %v\n", what, cliexit.Message(r.Err))
		default:
			fmt.Fprintf(e.stdout, "failed   %s: %v\n", what, r.Err)
		}
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%d of %d dead letters replayed to %s\n", len(letters)-failed, len(letters), target)
	if failed > 0 {
		return errors.New(strconv.Itoa(failed) + " of " + strconv.Itoa(len(letters)) + " dead letters not replayed; run alerts replay again once the webhook accepts them")
	}
	return nil
}
