// Command fieldpass-connector is the device agent: it enrols once, then
// keeps an outbound WireGuard tunnel to the broker and serves the broker's
// streams to the device's allowlisted services.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/cmd/internal/cafile"
	"github.com/fieldpass/fieldpass/cmd/internal/cliflag"
	"github.com/fieldpass/fieldpass/connector"
)

func main() {
	// A router's memory is small and shared: unless GOMEMLIMIT says
	// otherwise, the runtime collects harder as the connector nears
	// connectorMemoryLimit (a soft limit: it never fails an allocation).
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(connectorMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "fieldpass-connector: %s\n", message(err))
		}
		os.Exit(exitCode(err))
	}
}

// connectorMemoryLimit is the Go runtime's soft memory limit for the
// connector unless GOMEMLIMIT is set; see wgnet.Config.SmallDevice.
const connectorMemoryLimit = 16 << 20

const usage = `fieldpass-connector: the Fieldpass device agent.

Usage:
  fieldpass-connector enroll --broker URL --token TOKEN --state-dir DIR
  fieldpass-connector run --state-dir DIR --service NAME=HOST:PORT [--service ...] [--config FILE]
  fieldpass-connector version

Run "fieldpass-connector COMMAND -h" for a command's flags.
`

// usageError is bad command-line input (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func message(err error) string {
	var fe *fieldpass.Error
	if errors.As(err, &fe) {
		return fe.Message
	}
	return err.Error()
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0 // asked for, and given
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{msg: "no command given"}
	}
	switch args[0] {
	case "enroll", "enrol":
		return runEnroll(ctx, args[1:], stdout, stderr)
	case "run":
		return runRun(ctx, args[1:], getenv, stdout, stderr)
	case "version":
		fs := newFlagSet("version", "version\n\nPrints the release of this binary.", stdout, stderr)
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		fmt.Fprintln(stdout, fieldpass.Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{msg: fmt.Sprintf("unknown command %q", args[0])}
}

func newFlagSet(name, synopsis string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package's own error line is dropped: main prints the error
	// once, with the program's name, after the short usage. -h prints the
	// whole help on stdout (parse finds it in the output).
	out := &usageOutput{Writer: io.Discard}
	out.help = func() {
		fmt.Fprintf(stdout, "Usage: fieldpass-connector %s\n\nFlags:\n", synopsis)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(out)
	}
	fs.SetOutput(out)
	// What a usage error shows: the synopsis's first line and where the
	// rest is, so the one-line error below it stays in sight.
	fs.Usage = func() {
		first, _, _ := strings.Cut(synopsis, "\n")
		fmt.Fprintf(stderr, "Usage: fieldpass-connector %s\nRun \"fieldpass-connector %s -h\" for its flags.\n", first, name)
	}
	return fs
}

// usageOutput is a flag set's output: it drops the flag package's lines
// and carries the full help, which parse prints for -h.
type usageOutput struct {
	io.Writer
	help func()
}

func parse(fs *flag.FlagSet, args []string) error {
	short := fs.Usage
	fs.Usage = func() {} // the flag package calls it for -h and errors alike
	err := fs.Parse(args)
	fs.Usage = short
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			if o, ok := fs.Output().(*usageOutput); ok {
				o.help()
			}
			return err
		}
		fs.Usage()
		return usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageError{msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func runEnroll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("enroll", "enroll --broker URL --token TOKEN --state-dir DIR", stdout, stderr)
	broker := fs.String("broker", "", "broker URL, https://host[:port] (http only for a loopback broker)")
	token := fs.String("token", "", "single-use enrolment token (from fieldpass-broker token create)")
	stateDir := fs.String("state-dir", "", "directory for the device's key and state (created 0700)")
	caFile := fs.String("ca-file", "", "PEM `FILE` of a private CA to trust for the broker's certificate, besides the system's")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *broker == "" || *token == "" || *stateDir == "" {
		fs.Usage()
		return usageError{msg: "--broker, --token and --state-dir are required"}
	}
	hc, err := cafile.HTTPClient(*caFile, 30*time.Second)
	if err != nil {
		return usageError{msg: "--ca-file: " + err.Error()}
	}
	s, err := connector.Enroll(ctx, connector.EnrollConfig{BrokerURL: *broker, Token: strings.TrimSpace(*token), StateDir: *stateDir, HTTPClient: hc})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled as %s (tunnel address %s); start it with: fieldpass-connector run --state-dir %s --service NAME=HOST:PORT\n", s.DeviceName, s.TunnelAddress, *stateDir)
	return nil
}

// serviceFlag collects repeated --service NAME=HOST:PORT.
type serviceFlag map[string]string

func (s serviceFlag) String() string { return "" }
func (s serviceFlag) Set(v string) error {
	name, target, ok := strings.Cut(v, "=")
	if !ok || name == "" || target == "" {
		return fmt.Errorf("want NAME=HOST:PORT, got %q", v)
	}
	if err := fieldpass.ValidateServiceName(name); err != nil {
		return errors.New(fieldpass.ErrorMessage(err))
	}
	if err := connector.ValidateTarget(name, target); err != nil {
		return errors.New(fieldpass.ErrorMessage(err))
	}
	if _, dup := s[name]; dup {
		return fmt.Errorf("service %q given twice", name)
	}
	s[name] = target
	return nil
}

func runRun(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "run --state-dir DIR --service NAME=HOST:PORT [--service ...] [flags]", stdout, stderr)
	config := fs.String("config", "", "config `FILE` with one flag per line (`name = value`, # comments); command-line flags win")
	stateDir := fs.String("state-dir", "", "directory written by enroll")
	services := serviceFlag{}
	fs.Var(services, "service", "expose a local service as `NAME=HOST:PORT` (repeatable); only these are ever dialled")
	keepalive := fs.Duration("keepalive", 25*time.Second, "WireGuard persistent keepalive: the only idle traffic; longer saves data but risks carrier NAT timeouts. A keepalive set for this device on the broker (fieldpass-broker device keepalive) overrides it, also while connected")
	mtu := fs.Int("mtu", 0, "tunnel MTU (default: the broker's, 1280)")
	listen := fs.String("listen", "", "local UDP address for WireGuard (default: all addresses, random port)")
	maxBackoff := fs.Duration("max-backoff", 5*time.Minute, "longest wait between reconnect attempts")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *config != "" {
		if err := applyConfigFile(fs, *config); err != nil {
			return err
		}
	}
	if *stateDir == "" {
		fs.Usage()
		return usageError{msg: "--state-dir is required"}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	state, err := connector.LoadState(*stateDir)
	if err != nil {
		return err
	}
	var la netip.AddrPort
	if *listen != "" {
		if la, err = netip.ParseAddrPort(*listen); err != nil {
			return usageError{msg: fmt.Sprintf("--listen: %v", err)}
		}
	}
	c, err := connector.New(connector.Config{
		State:      state,
		Services:   services,
		Keepalive:  *keepalive,
		MTU:        *mtu,
		ListenAddr: la,
		MaxBackoff: *maxBackoff,
		Logger:     log,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	log.Info("connector starting", "device", state.DeviceName, "version", fieldpass.Version, "services", len(services), "udp_port", c.Device().ListenPort())
	return c.Run(ctx)
}

// applyConfigFile applies --config (cliflag.ApplyFile); a file that cannot
// be read is an error of its own, a bad line a usage error.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := cliflag.ApplyFile(fs, path); err != nil {
		return usageError{msg: err.Error()}
	}
	return nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{msg: fmt.Sprintf("--log-level: %v", err)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
