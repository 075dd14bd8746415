package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/cmd/internal/cliflag"
	"github.com/fieldpass/fieldpass/httpapi"
)

// The commands that talk to the broker's API.

func (e *env) client() (*httpapi.Client, error) {
	c, err := e.credentials()
	if err != nil {
		return nil, err
	}
	return httpapi.NewClient(c.Broker, c.Token), nil
}

const loginHelp = `Logs in with a device-style flow that works on a headless host: fieldpass
prints a URL and a short code, you open the URL in any browser, log in
with your identity provider and enter the code, and fieldpass receives
its own token. The token is saved, mode 0600, in
$XDG_CONFIG_HOME/fieldpass/config.json (~/.config/fieldpass/config.json).

The broker defaults to $FIELDPASS_BROKER, then to the one saved by the
last login.`

// Device-login poll answers that are not failures (RFC 8628).
const (
	loginPending  = "authorization_pending"
	loginSlowDown = "slow_down"
	loginExpired  = "expired"
	loginDenied   = "denied"
)

func (e *env) login(ctx context.Context, args []string) error {
	fs := e.flagSet("login --broker URL", loginHelp)
	brokerFlag := fs.String("broker", "", "broker `URL`, https://host[:port]")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	saved, err := e.loadConfig()
	if err != nil {
		return err
	}
	broker := *brokerFlag
	if broker == "" {
		broker = e.getenv(envBroker)
	}
	if broker == "" {
		broker = saved.Broker
	}
	if broker == "" {
		return fs.fail("no broker: give --broker URL")
	}
	if broker, err = checkBrokerURL(broker); err != nil {
		return err
	}
	cl := httpapi.NewClient(broker, "")
	start, err := cl.StartDeviceLogin(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "To log in, open %s and enter the code %s\n", start.VerificationURI, start.UserCode)

	interval := time.Duration(start.Interval) * time.Second
	if interval <= 0 {
		interval = 5 * time.Second
	}
	expires := time.Duration(start.ExpiresIn) * time.Second
	if expires <= 0 {
		expires = 10 * time.Minute
	}
	deadline := e.now().Add(expires)
	var tok *httpapi.DeviceLoginToken
	for tok == nil {
		if err := e.sleep(ctx, interval); err != nil {
			return errors.New("login interrupted")
		}
		t, err := cl.PollDeviceLogin(ctx, start.DeviceCode)
		switch fieldpass.ErrorCode(err) {
		case "":
			tok = t
			continue
		case loginPending, fieldpass.EUNAVAILABLE:
			// Not yet, or a blip on the way: ask again until the code
			// expires.
		case loginSlowDown:
			interval += 5 * time.Second
		case loginExpired:
			return errors.New("the login code expired before it was approved: run fieldpass login again")
		case loginDenied:
			return errors.New("the login was denied in the browser")
		default:
			return err
		}
		if !e.now().Before(deadline) {
			return errors.New("the login code expired before it was approved: run fieldpass login again")
		}
	}
	if err := fieldpass.CheckToken(tok.Token); err != nil {
		return errors.New("the broker sent a malformed token")
	}
	path, err := e.saveConfig(savedConfig{Broker: broker, Token: tok.Token, Email: tok.Email, ExpiresAt: tok.ExpiresAt})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Logged in to %s as %s (%s); the login expires %s. Saved in %s.\n",
		broker, tok.Email, roleList(tok.Roles), ts(tok.ExpiresAt), path)
	if e.getenv(envToken) != "" {
		fmt.Fprintf(e.stderr, "fieldpass: note: FIELDPASS_TOKEN is set and wins over the saved login\n")
	}
	return nil
}

func roleList(roles []fieldpass.Role) string {
	if len(roles) == 0 {
		return "no role: grants made out to you only"
	}
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return "roles: " + strings.Join(s, ", ")
}

func (e *env) logout(args []string) error {
	fs := e.flagSet("logout", `Revokes the token saved by "fieldpass login" at the broker and forgets it
(the broker URL stays, for the next login). FIELDPASS_TOKEN, if set, is not
affected.`)
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	saved, err := e.loadConfig()
	if err != nil {
		return err
	}
	if saved.Token == "" {
		fmt.Fprintln(e.stdout, "Not logged in.")
		return nil
	}
	email := saved.Email
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	err = httpapi.NewClient(saved.Broker, saved.Token).Logout(ctx)
	cancel()
	if code := fieldpass.ErrorCode(err); err != nil && code != fieldpass.ENOTFOUND && code != fieldpass.EEXPIRED && code != fieldpass.EFORBIDDEN {
		// Forget it anyway: the person asked to log out. Say what is left.
		fmt.Fprintf(e.stderr, "fieldpass: could not revoke the token at the broker (%s); it stays valid until %s\n",
			fieldpass.ErrorMessage(err), saved.ExpiresAt.Format(time.RFC3339))
	}
	saved.Token, saved.Email, saved.ExpiresAt = "", "", time.Time{}
	if _, err := e.saveConfig(saved); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Logged out %s from %s.\n", or(email, "you"), saved.Broker)
	return nil
}

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
	return writeDevices(e.stdout, devs, e.now())
}

const grantSynopsis = `  fieldpass grant create --user EMAIL (--device NAME | --label k=v) --service S [--service ...] (--duration D | --until T) --reason R [--ticket T]
  fieldpass grant list [--json]
  fieldpass grant revoke ID
`

func (e *env) grant(ctx context.Context, args []string) error {
	return e.subcommand("grant", grantSynopsis, args, map[string]func([]string) error{
		"create": func(a []string) error { return e.grantCreate(ctx, a) },
		"list":   func(a []string) error { return e.grantList(ctx, a) },
		"ls":     func(a []string) error { return e.grantList(ctx, a) },
		"revoke": func(a []string) error { return e.grantRevoke(ctx, a) },
	})
}

// grantCreateFlags are grant create's flags; body checks them and makes
// the API's request body.
type grantCreateFlags struct {
	user            string
	devices, labels cliflag.Strings
	services        cliflag.Strings
	duration, until string
	reason, ticket  string
	json            bool
}

func (f *grantCreateFlags) body(now time.Time) (httpapi.GrantCreate, error) {
	g := httpapi.GrantCreate{Subject: strings.TrimSpace(f.user), Reason: f.reason, Ticket: f.ticket}
	if g.Subject == "" {
		return g, errors.New("--user is required")
	}
	switch {
	case len(f.devices) > 0 && len(f.labels) > 0:
		return g, errors.New("give --device or --label, not both")
	case len(f.devices) == 0 && len(f.labels) == 0:
		return g, errors.New("give --device NAME or --label k=v")
	}
	for _, d := range f.devices {
		for _, name := range strings.Split(d, ",") {
			if err := fieldpass.ValidateDeviceName(name); err != nil {
				return g, errors.New(message(err))
			}
			g.Devices = append(g.Devices, name)
		}
	}
	if len(f.labels) > 0 {
		g.Selector = map[string]string{}
		for _, l := range f.labels {
			k, v, err := fieldpass.ParseLabel(l)
			if err != nil {
				return g, errors.New(message(err))
			}
			if old, dup := g.Selector[k]; dup && old != v {
				return g, fmt.Errorf("--label %s given twice with different values", k)
			}
			g.Selector[k] = v
		}
	}
	if len(f.services) == 0 {
		return g, errors.New("give at least one --service (e.g. ssh)")
	}
	for _, s := range f.services {
		for _, name := range strings.Split(s, ",") {
			if err := fieldpass.ValidateServiceName(name); err != nil {
				return g, errors.New(message(err))
			}
			g.Services = append(g.Services, name)
		}
	}
	switch {
	case f.duration != "" && f.until != "":
		return g, errors.New("give --duration or --until, not both")
	case f.duration != "":
		d, err := parseDuration(f.duration)
		if err != nil {
			return g, fmt.Errorf("--duration: %w", err)
		}
		g.Duration = d.String()
	case f.until != "":
		t, err := parseUntil(f.until, now)
		if err != nil {
			return g, fmt.Errorf("--until: %w", err)
		}
		g.End = t
	default:
		return g, errors.New("give --duration D or --until T: every grant ends")
	}
	if strings.TrimSpace(g.Reason) == "" {
		return g, errors.New("--reason is required")
	}
	return g, nil
}

func (e *env) grantCreate(ctx context.Context, args []string) error {
	fs := e.flagSet("grant create --user EMAIL (--device NAME | --label k=v) --service S [--service ...] (--duration D | --until T) --reason R [--ticket T]",
		`Gives a person (or a vendor's email not seen yet) access to devices' services
until a time. Admins only. Devices are named (--device, repeatable) or chosen
by labels (--label k=v, repeatable: all must match, so a device enrolled
later with those labels is covered too).

Examples:
  fieldpass grant create --user vendor@acme.example --device pump-7 --service ssh --duration 4h --reason "firmware update" --ticket OPS-1234
  fieldpass grant create --user alice@example.com --label site=north --service ssh --service web --until 2030-01-31T18:00:00Z --reason "commissioning"`)
	var f grantCreateFlags
	fs.StringVar(&f.user, "user", "", "`EMAIL` the grant is made out to")
	fs.Var(&f.devices, "device", "device `NAME` (repeatable)")
	fs.Var(&f.labels, "label", "label selector `k=v` (repeatable; all must match)")
	fs.Var(&f.services, "service", "service `NAME` (repeatable), e.g. ssh")
	fs.StringVar(&f.duration, "duration", "", "how long from now, `D`: e.g. 4h or 7d")
	fs.StringVar(&f.until, "until", "", "end `TIME`, RFC 3339, e.g. 2030-01-31T18:00:00Z")
	fs.StringVar(&f.reason, "reason", "", "why, `R` (required; recorded in the audit log)")
	fs.StringVar(&f.ticket, "ticket", "", "ticket reference `T`, e.g. OPS-1234")
	fs.BoolVar(&f.json, "json", false, "print the grant as JSON")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	body, err := f.body(e.now())
	if err != nil {
		return fs.fail("%s", err.Error())
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	g, err := cl.CreateGrant(ctx, body)
	if err != nil {
		return err
	}
	if f.json {
		return writeJSON(e.stdout, g)
	}
	fmt.Fprintf(e.stdout, "Created grant %s: %s may reach %s (%s) until %s.\n",
		g.ID, g.Subject, grantDevices(g), strings.Join(g.Services, ","), ts(g.End))
	return nil
}

func (e *env) grantList(ctx context.Context, args []string) error {
	fs := e.flagSet("grant list [--json]", `Lists grants, newest first: all of them for admins and auditors, your own
for everyone else.`)
	user := fs.String("user", "", "only grants made out to `EMAIL`")
	device := fs.String("device", "", "only grants naming device `NAME`")
	active := fs.Bool("active", false, "only grants in force now")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := fs.parse(args, 0, 0); err != nil {
		return err
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	gs, err := cl.Grants(ctx, httpapi.GrantQuery{Subject: *user, Device: *device, Active: *active})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, gs)
	}
	return writeGrants(e.stdout, gs, e.now())
}

func (e *env) grantRevoke(ctx context.Context, args []string) error {
	fs := e.flagSet("grant revoke ID", `Revokes a grant now; sessions it carries are cut within a second. Admins
only.`)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	g, err := cl.RevokeGrant(ctx, pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Revoked grant %s (%s on %s).\n", g.ID, g.Subject, grantDevices(g))
	return nil
}

const requestSynopsis = `  fieldpass request create --device NAME --service S --duration D --reason R [--ticket T] [--wait]
  fieldpass request list [--json]
  fieldpass request approve|deny ID
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
		return fmt.Errorf("request %s was %s by %s at %s", r.ID, r.Status, or(r.DecidedBy, "?"), ts(r.DecidedAt))
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
	fs := e.flagSet("request "+verb+" ID", help)
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	r, err := cl.DecideRequest(ctx, pos[0], approve)
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

// outputFlags are --json and --csv, at most one.
type outputFlags struct{ json, csv *bool }

func addOutputFlags(fs *flagSet) outputFlags {
	return outputFlags{
		json: fs.Bool("json", false, "print JSON"),
		csv:  fs.Bool("csv", false, "print CSV with a header row"),
	}
}

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
		return writeJSON(e.stdout, auditViews(evs))
	case *out.csv:
		return writeAuditCSV(e.stdout, evs)
	}
	return writeAudit(e.stdout, evs)
}
