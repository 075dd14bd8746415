// Command fieldpass-demo runs a whole Fieldpass on this machine to look
// around in (make demo): see package demo.
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
	"path/filepath"
	"syscall"

	"github.com/fieldpass/fieldpass/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "fieldpass-demo: %v\n", err)
		os.Exit(1)
	}
}

const usage = `fieldpass-demo: a whole Fieldpass on this machine, on loopback, to look around in.

Usage:
  fieldpass-demo [--dir DIR] [--bin DIR]     start it; Ctrl-C stops everything
  fieldpass-demo reset [--dir DIR]           remove its data (the next start is a first run)

It starts a private PostgreSQL, the development OpenID provider, the broker
with its portal and two demo devices (a connector, sshd where installed, a
router-like web UI each), grants access to the engineer and the vendor, and
prints the portal's address, the logins and commands to try. Its data stays
in DIR between runs.

Flags:
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	reset := len(args) > 0 && args[0] == "reset"
	if reset {
		args = args[1:]
	}
	fs := flag.NewFlagSet("fieldpass-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	dir := fs.String("dir", defaultDir(getenv), "`DIR` for the demo's data, kept between runs ($FIELDPASS_DEMO_DIR; else $XDG_STATE_HOME/fieldpass-demo when set, else .demo)")
	bin := fs.String("bin", "", "`DIR` holding fieldpass-broker, fieldpass-connector, fieldpass and fieldpass-devidp (default: this program's directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if reset {
		if err := demo.Reset(abs); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Removed %s: the next demo starts afresh.\n", abs)
		return nil
	}
	if *bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the binaries: %w (give --bin)", err)
		}
		*bin = filepath.Dir(exe)
	}
	if *bin, err = filepath.Abs(*bin); err != nil {
		return err
	}
	return demo.Run(ctx, demo.Config{
		Dir:    abs,
		Bin:    *bin,
		Out:    stdout,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}

// defaultDir keeps the demo's data beside the checkout (make demo runs in
// it), unless the environment says otherwise.
func defaultDir(getenv func(string) string) string {
	if d := getenv("FIELDPASS_DEMO_DIR"); d != "" {
		return d
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "fieldpass-demo")
	}
	return ".demo"
}
