package main

import (
	"context"
	"fmt"
	"time"

	"github.com/fieldpass/fieldpass"
)

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
	cl, err := e.newClient(saved.Broker, saved.Token)
	if err == nil {
		err = cl.Logout(ctx)
	}
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
