package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

const userUsage = `Usage: fieldpass-broker user token --email EMAIL [--role ROLE ...] --ttl DURATION
       fieldpass-broker user list [--json]
       fieldpass-broker user disable|enable EMAIL
       fieldpass-broker user confirm-identity ISSUER SUBJECT`

func (e env) user(ctx context.Context, args []string) error {
	return e.dispatch(ctx, args, userUsage, "user subcommand", map[string]subcommand{
		"token":            e.userToken,
		"confirm-identity": e.userConfirmIdentity,
		"list":             e.userList,
		"ls":               e.userList,
		"disable": func(ctx context.Context, args []string) error {
			return e.userState(ctx, "disable", args)
		},
		"enable": func(ctx context.Context, args []string) error {
			return e.userState(ctx, "enable", args)
		},
	})
}

// roleFlag collects repeated --role.
type roleFlag []fieldpass.Role

func (r *roleFlag) String() string { return "" }
func (r *roleFlag) Set(v string) error {
	role, err := fieldpass.ParseRole(v)
	if err != nil {
		return fmt.Errorf("%s", fieldpass.ErrorMessage(err))
	}
	*r = append(*r, role)
	return nil
}

func (e env) userToken(ctx context.Context, args []string) error {
	fs := e.flagSet("user token", "user token --email EMAIL [--role ROLE ...] --ttl DURATION\n\n"+
		"Prints an automation token for EMAIL (one line), for bots and bootstrap. A user\n"+
		"that does not exist yet is created with the given roles (admin, approver,\n"+
		"engineer, auditor; none makes a vendor); an existing user keeps theirs. The token\n"+
		"expires after --ttl (at most "+fieldpass.FormatDuration(postgres.MaxTokenTTL)+") and is stored only as a hash.\n"+
		"Issuing it is recorded in the audit log.")
	dbURL := e.databaseFlag(fs)
	email := fs.String("email", "", "the user's email address")
	var roles roleFlag
	fs.Var(&roles, "role", "role of a new user (repeatable)")
	ttl := new(time.Duration)
	fs.Var(daysFlag{ttl}, "ttl", "how long the token stays valid, `DURATION` such as 24h or 30d (required)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *email == "" {
		fs.Usage()
		return usageError{Msg: "--email is required"}
	}
	if *ttl == 0 {
		fs.Usage()
		return usageError{Msg: "--ttl is required: every token expires"}
	}
	if *ttl < time.Second || *ttl > postgres.MaxTokenTTL {
		return usageError{Msg: fmt.Sprintf("--ttl %s: want at least 1s and at most %s", fs.Lookup("ttl").Value, fieldpass.FormatDuration(postgres.MaxTokenTTL))}
	}
	addr, err := fieldpass.NormalizeEmail(*email)
	if err != nil {
		return usageError{Msg: "--email: " + fieldpass.ErrorMessage(err)}
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	actor := e.operatorActor()
	if _, err := db.User(ctx, addr); fieldpass.ErrorCode(err) == fieldpass.ENOTFOUND {
		if _, err := db.EnsureUser(ctx, actor, addr, roles); err != nil {
			return err
		}
	} else if err != nil {
		return err
	} else if len(roles) > 0 {
		fmt.Fprintf(e.stderr, "fieldpass-broker: user %s exists; --role ignored (roles come from the identity provider at login)\n", addr)
	}
	token, _, err := db.IssueToken(ctx, actor, addr, fieldpass.TokenAutomation, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, token)
	return nil
}

func (e env) userList(ctx context.Context, args []string) error {
	fs := e.flagSet("user list", "user list [--json]\n\nLists every user with roles and state.")
	dbURL := e.databaseFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON (one array) instead of a table")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	users, err := db.Users(ctx)
	if err != nil {
		return err
	}
	return printList(e, *asJSON, users, "EMAIL\tROLES\tSTATE\tCREATED", func(u *fieldpass.User) []string {
		roles := make([]string, len(u.Roles))
		for i, r := range u.Roles {
			roles[i] = string(r)
		}
		r := strings.Join(roles, ",")
		if r == "" {
			r = "(vendor)"
		}
		state := "active"
		if u.Disabled {
			state = "disabled"
		}
		return []string{u.Email, r, state, u.CreatedAt.Format(time.RFC3339)}
	})
}

func (e env) userState(ctx context.Context, verb string, args []string) error {
	help := "user " + verb + " EMAIL\n\n"
	if verb == "disable" {
		help += "Disables the user: their tokens are refused and running brokers cut their sessions."
	} else {
		help += "Enables a disabled user again."
	}
	fs := e.flagSet("user "+verb, help)
	dbURL := e.databaseFlag(fs)
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	u, err := db.SetUserDisabled(ctx, e.operatorActor(), fs.Arg(0), verb == "disable")
	if err != nil {
		return err
	}
	state := "enabled"
	if u.Disabled {
		state = "disabled"
	}
	fmt.Fprintf(e.stdout, "user %s is now %s\n", u.Email, state)
	return nil
}
