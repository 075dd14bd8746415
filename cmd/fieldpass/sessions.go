package main

import (
	"context"
	"fmt"

	"github.com/fieldpass/fieldpass/httpapi"
)

func (e *env) sessions(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "end" {
		return e.sessionEnd(ctx, args[1:])
	}
	fs := e.flagSet("sessions [--device D] [--user U] [--since T] [--open] [--limit N] [--json|--csv]",
		`Lists recorded sessions, newest first: who reached which device's service,
when, the bytes each way and why it ended. Auditors and admins see all;
others see their own. T is an RFC 3339 time or a duration ago (24h, 7d).
BYTES-IN is what the person sent to the device, BYTES-OUT what came back.
RECONNECTS counts the times the device's tunnel dropped and came back while
the session went on; STREAMS-CUT the connections those drops ended.

"fieldpass sessions end ID" ends a session (admins).`)
	device := fs.String("device", "", "only sessions to device `NAME`")
	user := fs.String("user", "", "only sessions of `EMAIL`")
	since := fs.String("since", "", "only sessions started since `T`")
	open := fs.Bool("open", false, "only sessions still open")
	limit := fs.Int("limit", 0, "at most `N` sessions (the broker's default page if 0, at most 1000)")
	out := addOutputFlags(fs)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	q := httpapi.SessionQuery{Device: *device, User: *user, Open: *open, Limit: *limit}
	if err := e.checkQuery(fs, out, *since, &q.Since, *limit); err != nil {
		return err
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	ss, err := cl.Sessions(ctx, q)
	if err != nil {
		return err
	}
	switch {
	case *out.json:
		return writeJSON(e.stdout, ss)
	case *out.csv:
		return writeSessionsCSV(e.stdout, ss)
	}
	return writeSessions(e.stdout, ss)
}

func (e *env) sessionEnd(ctx context.Context, args []string) error {
	fs := e.flagSet("sessions end ID [--reason R]", `Ends a session now (admins): the broker cuts its streams within a second
and records it as ended_by_admin, with your reason in the audit log.
"fieldpass sessions --open" lists the open ones and their IDs.`)
	reason := fs.String("reason", "", "why, `R`, recorded in the audit log")
	asJSON := fs.Bool("json", false, "print the ended session as JSON")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	s, err := cl.EndSessionWhy(ctx, pos[0], *reason)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, s)
	}
	fmt.Fprintf(e.stdout, "Ended session %s (%s on %s/%s): %s.\n", s.ID, s.User, s.Device, s.Service, s.EndReason)
	return nil
}
