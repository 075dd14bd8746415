package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
)

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
	cl, err := e.newClient(broker, "")
	if err != nil {
		return err
	}
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
