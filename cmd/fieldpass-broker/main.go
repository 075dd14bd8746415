// Command fieldpass-broker is the central daemon (serve) and the operator's
// admin tool on the server host: migrate, token, device, user, audit, report, alerts. The admin
// commands act directly on the database; a running broker picks their effect
// up through LISTEN/NOTIFY.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/fieldpass/fieldpass"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "fieldpass-broker: %s\n", cliexit.Message(err))
		}
		os.Exit(cliexit.Code(err))
	}
}

const usage = `fieldpass-broker: the Fieldpass broker and its admin commands.

Usage:
  fieldpass-broker serve --database-url URL --http-listen ADDR --wg-listen UDPADDR --public-url URL [--init] [flags]
  fieldpass-broker migrate --database-url OWNER_URL [--grant-to ROLE]
  fieldpass-broker migrate status [--json]
  fieldpass-broker token create --device NAME [--label k=v ...] [--ttl 24h]
  fieldpass-broker device list [--json]
  fieldpass-broker device disable|enable|decommission NAME
  fieldpass-broker device keepalive NAME DURATION|default
  fieldpass-broker device history NAME [--since 24h] [--json]
  fieldpass-broker user token --email EMAIL [--role ROLE ...] --ttl DURATION
  fieldpass-broker user list [--json]
  fieldpass-broker user disable|enable EMAIL
  fieldpass-broker user confirm-identity ISSUER SUBJECT
  fieldpass-broker report stale [--not-seen 30d] [--no-session 90d] [--json]
  fieldpass-broker audit checkpoint --checkpoint-key FILE
  fieldpass-broker audit export [--since-seq N] > export.jsonl
  fieldpass-broker audit verify [--public-key KEY]
  fieldpass-broker audit verify --file export.jsonl --public-key KEY [--checkpoints older.jsonl ...]
  fieldpass-broker alerts list [--since 7d|TIME] [--limit N] [--json]
  fieldpass-broker alerts replay --alert-webhook URL --alert-secret-file FILE (ID ... | --all [--since 7d|TIME])
  fieldpass-broker health [--url http://127.0.0.1:8080/readyz]
  fieldpass-broker version

Every command but "audit verify --file" takes --database-url or FIELDPASS_DATABASE_URL;
migrate prefers FIELDPASS_MIGRATE_DATABASE_URL, the schema owner's (serve runs as a role of its own).
Token, device, user and alerts replay commands are recorded in the audit log as operator:USER@HOST.
Run "fieldpass-broker COMMAND -h" for a command's flags.
`

// usageError is bad command-line input (exit 2).
type usageError = cliexit.UsageError

type env struct {
	getenv         func(string) string
	stdout, stderr io.Writer
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	e := env{getenv: getenv, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{Msg: "no command given"}
	}
	switch args[0] {
	case "serve":
		return e.serve(ctx, args[1:])
	case "migrate":
		return e.migrate(ctx, args[1:])
	case "token":
		return e.token(ctx, args[1:])
	case "device", "devices":
		return e.device(ctx, args[1:])
	case "audit":
		return e.audit(ctx, args[1:])
	case "report":
		return e.report(ctx, args[1:])
	case "user", "users":
		return e.user(ctx, args[1:])
	case "alerts", "alert":
		return e.alertCommands(ctx, args[1:])
	case "health":
		return e.health(ctx, args[1:])
	case "version":
		fs := e.flagSet("version", "version\n\nPrints the release of this binary.")
		if err := parse(fs, args[1:], 0); err != nil {
			return err
		}
		fmt.Fprintln(stdout, fieldpass.Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{Msg: fmt.Sprintf("unknown command %q", args[0])}
}

func (e env) flagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package's own error line is dropped: main prints the error
	// once, with the program's name, after the short usage. -h prints the
	// whole help on stdout (parse finds it in the output).
	out := &usageOutput{Writer: io.Discard}
	out.help = func() {
		fmt.Fprintf(e.stdout, "Usage: fieldpass-broker %s\n\nFlags:\n", synopsis)
		fs.SetOutput(e.stdout)
		fs.PrintDefaults()
		fs.SetOutput(out)
	}
	fs.SetOutput(out)
	// What a usage error shows: the synopsis's first line and where the
	// rest is, so the one-line error below it stays in sight.
	fs.Usage = func() {
		first, _, _ := strings.Cut(synopsis, "\n")
		fmt.Fprintf(e.stderr, "Usage: fieldpass-broker %s\nRun \"fieldpass-broker %s -h\" for its flags.\n", first, name)
	}
	return fs
}

// parseFlags parses args: -h prints the whole help (on stdout) and returns
// flag.ErrHelp; a bad flag prints the short usage and returns a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	short := fs.Usage
	fs.Usage = func() {} // the flag package calls it for -h and errors alike
	err := fs.Parse(args)
	fs.Usage = short
	if err == nil {
		return nil
	}
	if errors.Is(err, flag.ErrHelp) {
		if o, ok := fs.Output().(*usageOutput); ok {
			o.help()
		}
		return err
	}
	fs.Usage()
	return usageError{Msg: err.Error()}
}

// usageOutput is a flag set's output: it drops the flag package's lines
// and carries the full help, which parse prints for -h.
type usageOutput struct {
	io.Writer
	help func()
}

// parse parses flags; want is the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, want int) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != want {
		fs.Usage()
		if fs.NArg() > want {
			return usageError{Msg: fmt.Sprintf("unexpected argument %q", fs.Arg(want))}
		}
		return usageError{Msg: "missing argument"}
	}
	return nil
}

func (e env) databaseFlag(fs *flag.FlagSet) *string {
	return fs.String("database-url", "", "Postgres URL (default $FIELDPASS_DATABASE_URL)")
}

func (e env) databaseURL(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if v := e.getenv("FIELDPASS_DATABASE_URL"); v != "" {
		return v, nil
	}
	return "", usageError{Msg: "no database: give --database-url or set FIELDPASS_DATABASE_URL"}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{Msg: fmt.Sprintf("--log-level: %v", err)}
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{Msg: fmt.Sprintf("--log-format %q: want text or json", format)}
}
