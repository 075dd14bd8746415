// Command fieldpass is the people's CLI for Fieldpass: log in, list the
// devices you may reach, open ssh sessions and port forwards through the
// broker, manage grants and access requests, and read sessions and the
// audit log.
//
// The broker and token come from FIELDPASS_BROKER and FIELDPASS_TOKEN when
// set (scripts, CI), else from the file written by "fieldpass login". The
// token is never printed and never put on a command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/fieldpass/fieldpass"
)

func main() {
	// SIGHUP too: ssh sends it to its ProxyCommand when it exits, and the
	// session should then end as client_closed rather than be killed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	oneProcessor(os.Getenv)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee exitError
		if !errors.As(err, &ee) && !errors.Is(err, errHelp) {
			fmt.Fprintf(os.Stderr, "fieldpass: %s\n", message(err))
		}
		os.Exit(exitCode(err))
	}
}

const usage = `Fieldpass CLI: reach field devices through the Fieldpass broker.

Usage:
  fieldpass login --broker URL
  fieldpass logout
  fieldpass devices [--json]
  fieldpass devices history NAME [--since 24h] [--limit N] [--json]
  fieldpass ssh [user@]DEVICE [-- ssh args]
  fieldpass proxy DEVICE SERVICE
  fieldpass forward DEVICE SERVICE [LOCAL_ADDR]
  fieldpass config ssh
  fieldpass grant create --user EMAIL (--device NAME | --label k=v) --service S [--service ...] (--duration D | --until T) --reason R [--ticket T] [--allow-unknown]
  fieldpass grant list [--user U] [--device D] [--active] [--json]
  fieldpass grant revoke ID [--reason R]
  fieldpass request create --device NAME --service S --duration D --reason R [--ticket T] [--wait]
  fieldpass request list [--status S] [--mine] [--json]
  fieldpass request approve|deny ID [--reason R]
  fieldpass sessions [--device D] [--user U] [--since T] [--open] [--limit N] [--json|--csv]
  fieldpass sessions end ID [--reason R]
  fieldpass audit [--since T] [--actor A] [--action X] [--target T] [--limit N] [--json|--csv]
  fieldpass report stale [--not-seen 30d] [--no-session 90d] [--json]
  fieldpass version

The broker and token come from FIELDPASS_BROKER and FIELDPASS_TOKEN when set,
else from the config saved by "fieldpass login".
Run "fieldpass COMMAND -h" for a command's flags.
`

// usageError is bad command-line input (exit 2).
type usageError = cliexit.UsageError

// exitError carries a child's exit status (fieldpass ssh) out of run
// without a message of our own: ssh has said what went wrong.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// errHelp is returned after -h printed a command's help: exit 0.
var errHelp = errors.New("help requested")

// message is what a person sees after "fieldpass: ".
func message(err error) string { return cliexit.Message(err) }

func exitCode(err error) int {
	var ee exitError
	switch {
	case errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return cliexit.Code(err)
}

// env is what a command may touch of the outside world. Commands are its
// methods, so a test can swap the clock or the waiting.
type env struct {
	getenv func(string) string
	// stdin is read only by proxy (ssh's ProxyCommand speaks on it) and
	// handed to ssh; the rest take their input from flags.
	stdin          io.Reader
	stdout, stderr io.Writer

	now func() time.Time
	// sleep waits d or until ctx ends (login and request --wait polling).
	sleep func(ctx context.Context, d time.Duration) error
	// executable is this binary, for ssh's ProxyCommand.
	executable func() (string, error)
	// connect opens a recorded session to a device's service (proxy,
	// forward): the broker's, through e.connectBroker.
	connect func(ctx context.Context, device, service string) (session, error)
}

// run is the whole program. It takes stdin beside Ryer's usual arguments
// because proxy pipes it to the device.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := newEnv(getenv, stdin, stdout, stderr)
	return e.run(ctx, args)
}

func newEnv(getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) *env {
	e := &env{
		getenv:     getenv,
		stdin:      stdin,
		stdout:     stdout,
		stderr:     stderr,
		now:        time.Now,
		sleep:      sleepCtx,
		executable: os.Executable,
	}
	e.connect = e.connectBroker
	return e
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *env) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return usageError{Msg: "no command given"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "login":
		return e.login(ctx, rest)
	case "logout":
		return e.logout(rest)
	case "devices", "device":
		return e.devices(ctx, rest)
	case "ssh":
		return e.ssh(rest)
	case "proxy":
		return e.proxy(ctx, rest)
	case "forward":
		return e.forward(ctx, rest)
	case "config":
		return e.config(rest)
	case "grant", "grants":
		return e.grant(ctx, rest)
	case "request", "requests":
		return e.request(ctx, rest)
	case "sessions", "session":
		return e.sessions(ctx, rest)
	case "audit":
		return e.audit(ctx, rest)
	case "report", "reports":
		return e.report(ctx, rest)
	case "version":
		fs := e.flagSet("version", "Prints the release of this binary.")
		if _, err := fs.parse(rest, 0, 0); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, fieldpass.Version)
		return nil
	case "help", "-h", "--help", "-help":
		if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			// "fieldpass help grant create" is "fieldpass grant create -h".
			return e.run(ctx, append(append([]string{}, rest...), "-h"))
		}
		fmt.Fprint(e.stdout, usage)
		return errHelp
	}
	fmt.Fprint(e.stderr, usage)
	return usageError{Msg: fmt.Sprintf("unknown command %q", cmd)}
}

// subcommand dispatches "fieldpass NAME SUB ..." (grant, request, config).
func (e *env) subcommand(name, synopsis string, args []string, subs map[string]func([]string) error) error {
	if len(args) == 0 {
		fmt.Fprintf(e.stderr, "Usage:\n%s\n", synopsis)
		return usageError{Msg: fmt.Sprintf("%s: no subcommand given", name)}
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		fmt.Fprintf(e.stdout, "Usage:\n%s\nRun \"fieldpass %s SUBCOMMAND -h\" for its flags.\n", synopsis, name)
		return errHelp
	}
	if f, ok := subs[args[0]]; ok {
		return f(args[1:])
	}
	fmt.Fprintf(e.stderr, "Usage:\n%s\n", synopsis)
	return usageError{Msg: fmt.Sprintf("unknown %s subcommand %q", name, args[0])}
}

// flagSet is a command's flags and help. -h prints the help on stdout and
// succeeds; a bad flag prints it on stderr and is a usage error.
type flagSet struct {
	*flag.FlagSet
	synopsis, help string
	stdout, stderr io.Writer
}

// flagSet makes the flags of "fieldpass SYNOPSIS"; help is the text below
// the usage line.
func (e *env) flagSet(synopsis, help string) *flagSet {
	fs := flag.NewFlagSet(synopsis, flag.ContinueOnError)
	// The flag package's own error line is dropped: main prints the error
	// once, with the program's name, after the usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, synopsis: synopsis, help: help, stdout: e.stdout, stderr: e.stderr}
}

func (fs *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: fieldpass %s\n", fs.synopsis)
	if fs.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(fs.help, "\n"))
	}
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprint(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

// printShort is the usage shown with a usage error: the synopsis and where
// the rest is, so the one-line error below it stays in sight.
func (fs *flagSet) printShort(w io.Writer) {
	fmt.Fprintf(w, "Usage: fieldpass %s\nRun \"fieldpass %s -h\" for its flags.\n", fs.synopsis, commandOf(fs.synopsis))
}

// commandOf is the command words of a synopsis: "grant create" of "grant
// create --user EMAIL ...".
func commandOf(synopsis string) string {
	var words []string
	for _, w := range strings.Fields(synopsis) {
		if strings.ContainsAny(w[:1], "-[<") || strings.ToLower(w) != w || strings.ContainsAny(w, "@=:|") {
			break
		}
		words = append(words, w)
	}
	return strings.Join(words, " ")
}

// parse parses args, allowing flags after positional arguments ("grant
// revoke ID --json"), and returns the positional ones: between min and max
// of them (max < 0: any number). Everything after "--" is positional.
func (fs *flagSet) parse(args []string, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.printUsage(fs.stdout)
				return nil, errHelp
			}
			fs.printShort(fs.stderr)
			return nil, usageError{Msg: err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < min {
		fs.printShort(fs.stderr)
		return nil, usageError{Msg: "missing argument"}
	}
	if max >= 0 && len(pos) > max {
		fs.printShort(fs.stderr)
		return nil, usageError{Msg: fmt.Sprintf("unexpected argument %q", pos[max])}
	}
	return pos, nil
}

// fail prints the short usage on stderr and returns a usage error.
func (fs *flagSet) fail(format string, args ...any) error {
	fs.printShort(fs.stderr)
	return usageError{Msg: fmt.Sprintf(format, args...)}
}
