package main

import (
	"context"

	"github.com/fieldpass/fieldpass/httpapi"
)

func (e *env) audit(ctx context.Context, args []string) error {
	fs := e.flagSet("audit [--since T] [--actor A] [--action X] [--target T] [--json|--csv]",
		`Lists audit events in order: logins, tokens, grants, requests, approvals,
enrolments, device changes and sessions. Auditors and admins only.
T for --since is an RFC 3339 time or a duration ago (24h, 7d).

Examples:
  fieldpass audit --since 24h --action grant.create
  fieldpass audit --actor user:alice@example.com --csv > alice.csv`)
	since := fs.String("since", "", "only events since `T`")
	actor := fs.String("actor", "", "only events by `ACTOR`, e.g. user:alice@example.com")
	action := fs.String("action", "", "only events of `ACTION`, e.g. grant.create, session.end")
	target := fs.String("target", "", "only events on `TARGET`, e.g. device:pump-7")
	limit := fs.Int("limit", 0, "at most `N` events (the broker's default page if 0, at most 1000)")
	out := addOutputFlags(fs)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	q := httpapi.AuditQuery{Actor: *actor, Action: *action, Target: *target, Limit: *limit}
	if err := e.checkQuery(fs, out, *since, &q.Since, *limit); err != nil {
		return err
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	evs, err := cl.Audit(ctx, q)
	if err != nil {
		return err
	}
	switch {
	case *out.json:
		return writeJSON(e.stdout, evs) // the API's own dialect (fieldpass.AuditEvent.MarshalJSON)
	case *out.csv:
		return writeAuditCSV(e.stdout, evs)
	}
	return writeAudit(e.stdout, evs)
}
