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
	"math"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/cmd/internal/cliflag"
	"github.com/fieldpass/fieldpass/connector"
)

func main() {
	oneProcessor(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "fieldpass-connector: %s\n", cliexit.Message(err))
		}
		os.Exit(cliexit.Code(err))
	}
}

const usage = `fieldpass-connector: the Fieldpass device agent.

Usage:
  fieldpass-connector enroll --token TOKEN --broker-key KEY --endpoint HOST:PORT --address ADDR/BITS --state-dir DIR
  fieldpass-connector run --state-dir DIR --service NAME=HOST:PORT [--service ...] [--config FILE]
  fieldpass-connector version

Run "fieldpass-connector COMMAND -h" for a command's flags.
`

// usageError is bad command-line input (exit 2).
type usageError = cliexit.UsageError

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{Msg: "no command given"}
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
	return usageError{Msg: fmt.Sprintf("unknown command %q", args[0])}
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
		return usageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageError{Msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func runEnroll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("enroll", "enroll --token TOKEN --broker-key KEY --endpoint HOST:PORT --address ADDR/BITS --state-dir DIR\n\nEnrols inside WireGuard with the token's own key pair: the flags are those of the enrol\ncommand fieldpass-broker token create (or the portal's enrolment page) printed.", stdout, stderr)
	token := fs.String("token", "", "single-use enrolment token (from fieldpass-broker token create)")
	stateDir := fs.String("state-dir", "", "directory for the device's key and state (created 0700)")
	brokerKey := fs.String("broker-key", "", "the broker's WireGuard public `KEY` (base64), from the enrol command")
	endpoint := fs.String("endpoint", "", "the broker's WireGuard `HOST:PORT` (UDP), from the enrol command")
	address := fs.String("address", "", "the token's tunnel address with the prefix length (`ADDR/BITS`), from the enrol command")
	broker := fs.String("broker", "", "enrol over HTTPS at this broker URL instead (connectors built with -tags enroll_https only)")
	caFile := fs.String("ca-file", "", "PEM `FILE` of a private CA to trust for the broker's certificate, with --broker")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *token == "" || *stateDir == "" {
		fs.Usage()
		return usageError{Msg: "--token and --state-dir are required, with --broker-key, --endpoint and --address"}
	}
	var s *connector.State
	var err error
	if *broker != "" {
		if enrollHTTPS == nil {
			return usageError{Msg: "this connector enrols inside WireGuard only (HTTPS would add crypto/tls to a binary made to fit a router): use the enrol command fieldpass-broker token create prints, with --broker-key, --endpoint and --address"}
		}
		s, err = enrollHTTPS(ctx, *broker, *caFile, strings.TrimSpace(*token), *stateDir)
	} else {
		if *brokerKey == "" || *endpoint == "" || *address == "" {
			fs.Usage()
			return usageError{Msg: "--broker-key, --endpoint and --address are required (copy the whole enrol command that fieldpass-broker token create printed)"}
		}
		addr, perr := netip.ParsePrefix(*address)
		if perr != nil {
			return usageError{Msg: fmt.Sprintf("--address %q: want the token's tunnel address with its prefix length, such as 10.77.255.254/16", *address)}
		}
		s, err = connector.EnrollInTunnel(ctx, connector.TunnelEnrollConfig{
			Token: strings.TrimSpace(*token), BrokerKey: *brokerKey, Endpoint: *endpoint, Address: addr, StateDir: *stateDir,
		})
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrolled as %s (tunnel address %s); start it with: fieldpass-connector run --state-dir %s --service NAME=HOST:PORT\n", s.DeviceName, s.TunnelAddress, *stateDir)
	return nil
}

// enrollHTTPS enrols over HTTPS (enroll_https.go); nil in the default
// build, which links no crypto/tls.
var enrollHTTPS func(ctx context.Context, brokerURL, caFile, token, stateDir string) (*connector.State, error)

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
	disabledBackoff := fs.Duration("disabled-backoff", 30*time.Minute, "wait between calls while the broker says this device is disabled or decommissioned (it calls the device back when enabled)")
	memLimit := fs.String("memory-limit", defaultMemoryLimit, "soft limit of the memory the Go runtime uses (`SIZE` in B, KiB, MiB or GiB, or off): near it the garbage collector works harder, so the connector stays small on a 64 MB router. GOMEMLIMIT, if set, wins over the default")
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
		return usageError{Msg: "--state-dir is required"}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "memory-limit" })
	limit, err := memoryLimit(*memLimit, explicit, getenv("GOMEMLIMIT"))
	if err != nil {
		return usageError{Msg: "--memory-limit: " + err.Error()}
	}
	state, err := connector.LoadState(*stateDir)
	if err != nil {
		return err
	}
	var la netip.AddrPort
	if *listen != "" {
		if la, err = netip.ParseAddrPort(*listen); err != nil {
			return usageError{Msg: fmt.Sprintf("--listen: %v", err)}
		}
	}
	c, err := connector.New(connector.Config{
		State:      state,
		Services:   services,
		Keepalive:  *keepalive,
		MTU:        *mtu,
		ListenAddr: la,
		MaxBackoff: *maxBackoff,
		// The flag's zero would mean the default anyway.
		DisabledBackoff: *disabledBackoff,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	log.Info("connector starting", "device", state.DeviceName, "version", fieldpass.Version, "services", len(services), "udp_port", c.Device().ListenPort(), "memory_limit", limit)
	return c.Run(ctx)
}

// applyConfigFile applies --config (cliflag.ApplyFile); a file that cannot
// be read is an error of its own, a bad line a usage error.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := cliflag.ApplyFile(fs, path); err != nil {
		return usageError{Msg: err.Error()}
	}
	return nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{Msg: fmt.Sprintf("--log-level: %v", err)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// defaultMemoryLimit suits a router with 64 MB of RAM: the connector's
// idle heap is a few MB, and a bulk transfer's buffers (WireGuard batches,
// TCP windows, yamux windows) stay under it at the cost of more frequent
// collection. It is a soft limit: Go does not fail an allocation over it,
// and caps the collector's share of the CPU when the live heap itself is
// larger.
//
// 16 MiB: with wgnet's small-device buffers (wgnet.Config.SmallDevice) the
// connector's RSS stays near 23 MB through a 1 GiB transfer at this limit
// (make bench-field), under the 24 MB a 64 MB router can give it.
const defaultMemoryLimit = "16MiB"

// memoryLimit applies the runtime's soft memory limit and says what is in
// effect: the flag if given (on the command line or in --config), else
// GOMEMLIMIT if set (the runtime has read it already), else the default.
func memoryLimit(flagValue string, explicit bool, env string) (string, error) {
	if !explicit && env != "" {
		return "GOMEMLIMIT=" + env, nil
	}
	n, err := parseSize(flagValue)
	if err != nil {
		return "", err
	}
	debug.SetMemoryLimit(n)
	if n == math.MaxInt64 {
		return "off", nil
	}
	return flagValue, nil
}

// parseSize reads a size as GOMEMLIMIT does: a number of bytes with an
// optional unit B, KiB, MiB, GiB or TiB, or "off" (no limit).
func parseSize(s string) (int64, error) {
	if s == "off" {
		return math.MaxInt64, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	num, mult := s, int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q: want a size such as 24MiB (units B, KiB, MiB, GiB, TiB) or off", s)
	}
	return n * mult, nil
}
