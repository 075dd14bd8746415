package main

import (
	"context"
	"fmt"
)

// userConfirmIdentity confirms that a login claiming a bound user's email
// owns it (issue 10: identity is the provider's issuer and subject).
func (e env) userConfirmIdentity(ctx context.Context, args []string) error {
	fs := e.flagSet("user confirm-identity", `user confirm-identity ISSUER SUBJECT

Confirms that the identity provider's login SUBJECT at ISSUER owns the email
it arrived with, which another login was bound to (the refused login is in
the audit log as user.identity_claim). Its next login takes over that
email's user, roles and grants. Recorded as user.identity_confirm.`)
	dbURL := e.databaseFlag(fs)
	if err := parse(fs, args, 2); err != nil {
		return err
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := db.ConfirmIdentity(ctx, e.operatorActor(), fs.Arg(0), fs.Arg(1))
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "confirmed: %s at %s owns %s; its next login takes over that user\n", c.Subject, c.Issuer, c.Email)
	return nil
}
