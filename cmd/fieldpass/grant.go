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

const grantSynopsis = `  fieldpass grant create --user EMAIL (--device NAME | --label k=v) --service S [--service ...] (--duration D | --until T) --reason R [--ticket T]
  fieldpass grant list [--json]
  fieldpass grant revoke ID [--reason R]
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
	allowUnknown    bool
	json            bool
}

func (f *grantCreateFlags) body(now time.Time) (httpapi.GrantCreate, error) {
	g := httpapi.GrantCreate{Subject: strings.TrimSpace(f.user), Reason: f.reason, Ticket: f.ticket, AllowUnknown: f.allowUnknown}
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
	fs.BoolVar(&f.allowUnknown, "allow-unknown", false, "allow --device names not enrolled yet (else refused: a typo makes a useless grant)")
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
	fs := e.flagSet("grant revoke ID [--reason R]", `Revokes a grant now; sessions it carries are cut within a second. Admins
only. The reason is kept on the grant (grant list shows it) and in the
audit log.`)
	reason := fs.String("reason", "", "why, `R`, kept on the grant and in the audit log (optional)")
	pos, err := fs.parse(args, 1, 1)
	if err != nil {
		return err
	}
	cl, err := e.client()
	if err != nil {
		return err
	}
	g, err := cl.RevokeGrantBecause(ctx, pos[0], *reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Revoked grant %s (%s on %s).\n", g.ID, g.Subject, grantDevices(g))
	return nil
}
