package main

import (
	"context"

	"github.com/fieldpass/fieldpass/httpapi"
)

func (e *env) sessions(ctx context.Context, args []string) error {
	fs := e.flagSet("sessions [--device D] [--user U] [--since T] [--json|--csv]",
		`Lists recorded sessions, newest first: who reached which device's service,
when, the bytes each way and why it ended. Auditors and admins see all;
others see their own. T is an RFC 3339 time or a duration ago (24h, 7d).`)
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
