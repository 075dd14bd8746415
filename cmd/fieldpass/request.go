package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
)

const requestSynopsis = `  fieldpass request create --device NAME --service S --duration D --reason R [--ticket T] [--wait]
  fieldpass request list [--json]
  fieldpass request approve|deny ID [--reason R]
`

func (e *env) request(ctx context.Context, args []string) error {
	return e.subcommand("request", requestSynopsis, args, map[string]func([]string) error{
		"create":  func(a []string) error { return e.requestCreate(ctx, a) },
		"list":    func(a []string) error { return e.requestList(ctx, a) },
		"ls":      func(a []string) error { return e.requestList(ctx, a) },
		"approve": func(a []string) error { return e.requestDecide(ctx, a, true) },
		"deny":    func(a []string) error { return e.requestDecide(ctx, a, false) },
	})
}

// requestPoll is how often request create --wait asks for the decision.
const requestPoll = 3 * time.Second

func (e *env) requestCreate(ctx context.Context, args []string) error {
	fs := e.flagSet("request create --device NAME --service S --duration D --reason R [--ticket T] [--wait]",
		`Asks for access to one device's service for a while. An approver other
than you approves it (which creates the grant, starting then) or denies it.
With --wait, fieldpass waits for the decision and says who made it and
when; it exits non-zero if the request is denied.`)
	device := fs.String("device", "", "device `NAME`")
	service := fs.String("service", "", "service `NAME`, e.g. ssh")
	duration := fs.String("duration", "", "how long, from approval, `D`: e.g. 2h")
	reason := fs.String("reason", "", "why, `R` (required; the approver sees it)")
	ticket := fs.String("ticket", "", "ticket reference `T`, e.g. OPS-1234")
	wait := fs.Bool("wait", false, "wait for the decision")
	asJSON := fs.Bool("json", false, "print the request (the decided one with --wait) as JSON")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	if err := fieldpass.ValidateDeviceName(*device); err != nil {
		return fs.fail("--device: %s", message(err))
	}
	if err := fieldpass.ValidateServiceName(*service); err != nil {
		return fs.fail("--service: %s", message(err))
	}
	if *duration == "" {
		return fs.fail("--duration is required")
	}
	d, err := parseDuration(*duration)
	if err != nil {
		return fs.fail("--duration: %v", err)
	}
	if strings.TrimSpace(*reason) == "" {
		return fs.fail("--reason is required")
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	r, err := cl.CreateRequest(ctx, httpapi.RequestCreate{Device: *device, Service: *service, Duration: d.String(), Reason: *reason, Ticket: *ticket})
	if err != nil {
		return err
	}
	if !*wait {
		if *asJSON {
			return writeJSON(e.stdout, r)
		}
		fmt.Fprintf(e.stdout, "Created request %s for %s/%s for %s; an approver decides it with: fieldpass request approve %s\n",
			r.ID, r.Device, r.Service, formatDuration(r.Duration), r.ID)
		return nil
	}
	fmt.Fprintf(e.stderr, "Created request %s for %s/%s for %s; waiting for an approver (Ctrl-C stops waiting, the request stays)...\n",
		r.ID, r.Device, r.Service, formatDuration(r.Duration))
	for r.Status == fieldpass.RequestPending {
		if err := e.sleep(ctx, requestPoll); err != nil {
			return fmt.Errorf("stopped waiting; request %s is still pending", r.ID)
		}
		cur, err := cl.Request(ctx, r.ID)
		if fieldpass.ErrorCode(err) == fieldpass.EUNAVAILABLE {
			continue // the broker will be back; the request is not going anywhere
		}
		if err != nil {
			return err
		}
		r = cur
	}
	if *asJSON {
		if err := writeJSON(e.stdout, r); err != nil {
			return err
		}
	}
	if r.Status != fieldpass.RequestApproved {
		why := ""
		if r.Comment != "" {
			why = ": " + r.Comment
		}
		return fmt.Errorf("request %s was %s by %s at %s%s", r.ID, r.Status, or(r.DecidedBy, "?"), ts(r.DecidedAt), why)
	}
	if !*asJSON {
		fmt.Fprintf(e.stdout, "Request %s was approved by %s at %s: grant %s, %s/%s until %s.\n",
			r.ID, r.DecidedBy, ts(r.DecidedAt), r.GrantID, r.Device, r.Service, ts(r.DecidedAt.Add(r.Duration)))
	}
	return nil
}

func (e *env) requestList(ctx context.Context, args []string) error {
	fs := e.flagSet("request list [--json]", `Lists access requests: your own, and for approvers and admins everyone's.`)
	status := fs.String("status", "", "only requests in `STATUS`: pending, approved or denied")
	mine := fs.Bool("mine", false, "only your own requests")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	switch fieldpass.RequestStatus(*status) {
	case "", fieldpass.RequestPending, fieldpass.RequestApproved, fieldpass.RequestDenied:
	default:
		return fs.fail("--status %q: want pending, approved or denied", *status)
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	rs, err := cl.Requests(ctx, httpapi.RequestQuery{Status: *status, Mine: *mine})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, rs)
	}
	return writeRequests(e.stdout, rs)
}

func (e *env) requestDecide(ctx context.Context, args []string, approve bool) error {
	verb, help := "deny", "Denies a pending access request. Approvers and admins only."
	if approve {
		verb, help = "approve", `Approves a pending access request, which creates the grant (starting now).
Approvers and admins only, and never for their own request.`
	}
	fs := e.flagSet("request "+verb+" ID [--reason TEXT]", help+`
The reason (for a denial, why; for an approval, a word for the requester)
is shown to the requester, in request list, and kept in the audit log.`)
	reason := fs.String("reason", "", "why, `R`, for the requester (optional)")
	comment := fs.String("comment", "", "the same as --reason, `R`")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	if *comment != "" && *reason != "" && *comment != *reason {
		return usageError{Msg: "give --reason or --comment, not both"}
	}
	*comment = or(*comment, *reason)
	cl, err := e.client()
	if err != nil {
		return err
	}
	r, err := cl.DecideRequest(ctx, pos[0], approve, *comment)
	if err != nil {
		return err
	}
	if approve {
		fmt.Fprintf(e.stdout, "Approved request %s: %s may reach %s/%s until %s (grant %s).\n",
			r.ID, r.Requester, r.Device, r.Service, ts(r.DecidedAt.Add(r.Duration)), r.GrantID)
	} else {
		fmt.Fprintf(e.stdout, "Denied request %s of %s for %s/%s.\n", r.ID, r.Requester, r.Device, r.Service)
	}
	return nil
}
