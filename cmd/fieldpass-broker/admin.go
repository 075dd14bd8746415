package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

func (e env) openDB(ctx context.Context, flagValue string) (*postgres.DB, error) {
	url, err := e.databaseURL(flagValue)
	if err != nil {
		return nil, err
	}
	return postgres.Open(ctx, url)
}

func (e env) migrate(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "status" {
		return e.migrateStatus(ctx, args[1:]) // migrate_status.go
	}
	fs := e.flagSet("migrate", "migrate --database-url OWNER_URL [--grant-to ROLE]\n\n"+
		"Applies the migrations as the role that owns the schema. With --grant-to, then grants ROLE,\n"+
		"the role serve connects as, exactly the privileges the broker needs: it can append to the\n"+
		"audit log but not alter it. Run it on every upgrade; it is safe to repeat.\n"+
		"\"fieldpass-broker migrate status\" lists the migrations applied and pending.")
	dbURL := fs.String("database-url", "", "Postgres URL of the schema's owner (default $FIELDPASS_MIGRATE_DATABASE_URL, else $FIELDPASS_DATABASE_URL)")
	grantTo := fs.String("grant-to", "", "database `role` serve runs as, granted the broker's privileges (default $FIELDPASS_BROKER_ROLE)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *dbURL == "" {
		*dbURL = e.getenv("FIELDPASS_MIGRATE_DATABASE_URL")
	}
	if *grantTo == "" {
		*grantTo = e.getenv("FIELDPASS_BROKER_ROLE")
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "database is up to date")
	if *grantTo != "" {
		if err := db.GrantBrokerRole(ctx, *grantTo); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "role %s has the broker's privileges\n", *grantTo)
	}
	return nil
}

// labelFlag collects repeated --label k=v.
type labelFlag map[string]string

func (l labelFlag) String() string { return "" }
func (l labelFlag) Set(v string) error {
	k, val, err := fieldpass.ParseLabel(v)
	if err != nil {
		return fmt.Errorf("%s", fieldpass.ErrorMessage(err))
	}
	l[k] = val
	return nil
}

func (e env) token(ctx context.Context, args []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(e.stdout, "Usage: fieldpass-broker token create --device NAME [--label k=v ...] [--ttl 24h]")
		return nil
	}
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintln(e.stderr, "Usage: fieldpass-broker token create --device NAME [--label k=v ...] [--ttl 24h]")
		if len(args) == 0 {
			return usageError{Msg: "missing subcommand"}
		}
		return usageError{Msg: fmt.Sprintf("unknown token subcommand %q", args[0])}
	}
	fs := e.flagSet("token create", "token create --device NAME [--label k=v ...] [--ttl 24h]\n\nPrints a single-use enrolment token (one line). It is stored only as a hash.\nOn stderr: the one-line installs of the connector and the enrol command for the device,\nat the broker's FIELDPASS_PUBLIC_URL (as in broker.env).")
	dbURL := e.databaseFlag(fs)
	device := fs.String("device", "", "name the device will have (lowercase letters, digits, hyphens)")
	labels := labelFlag{}
	fs.Var(labels, "label", "device label `k=v` (repeatable)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token stays valid")
	downloadURL := fs.String("download-url", e.getenv("FIELDPASS_DOWNLOAD_URL"), "`URL` devices fetch the connector's packages from, for the install lines on stderr (env FIELDPASS_DOWNLOAD_URL; default: this release's downloads)")
	keyFile := fs.String("key-file", defaultKeyFile(e.getenv), "the broker's WireGuard private key (as serve's --key-file), whose public half the enrol command carries")
	wgEndpoint := fs.String("wg-endpoint", "", "the broker's public WireGuard `host:port` for the enrol command (as serve's --wg-endpoint; default: the public URL's host, port 51820)")
	prefix := fs.String("tunnel-prefix", "10.77.0.0/16", "the tunnel address space (as serve's --tunnel-prefix)")
	if err := parse(fs, args[1:], 0); err != nil {
		return err
	}
	if *device == "" {
		fs.Usage()
		return usageError{Msg: "--device is required"}
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	tok, _, err := db.CreateEnrollmentTokenAudited(ctx, e.operatorActor(), *device, labels, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, tok)
	publicURL := e.getenv("FIELDPASS_PUBLIC_URL")
	tunnelCmd, why := tunnelEnrolCommand(ctx, db, tok, *keyFile, *wgEndpoint, publicURL, *prefix)
	if why != "" {
		fmt.Fprintf(e.stderr, "(no enrol command inside WireGuard: %s)\n", why)
	}
	printEnrolGuide(e.stderr, publicURL, tok, *downloadURL, tunnelCmd)
	return nil
}

// tunnelEnrolCommand is the connector's enroll command inside WireGuard for
// token: the token, the broker's public key and endpoint and the token's
// tunnel address. why says what is missing when there is none.
func tunnelEnrolCommand(ctx context.Context, db *postgres.DB, token, keyFile, endpoint, publicURL, prefix string) (cmd, why string) {
	key, _, err := loadOrCreateKey(keyFile, false)
	if err != nil {
		return "", fmt.Sprintf("the broker's key: %s (give --key-file)", fieldpass.ErrorMessage(err))
	}
	pfx, err := netip.ParsePrefix(prefix)
	if err != nil {
		return "", fmt.Sprintf("--tunnel-prefix %q is not a prefix", prefix)
	}
	if endpoint == "" {
		u, err := url.Parse(publicURL)
		if err != nil || u.Hostname() == "" {
			return "", "give --wg-endpoint or FIELDPASS_PUBLIC_URL"
		}
		endpoint = net.JoinHostPort(u.Hostname(), "51820")
	}
	p, err := db.EnrollmentPeerOf(ctx, token)
	if err != nil || p == nil {
		return "", fmt.Sprintf("the token's enrolment peer: %v", err)
	}
	cmd, err = enrolCommand(token, key.Public(), endpoint, pfx, p.Seq)
	if err != nil {
		return "", err.Error()
	}
	return cmd, ""
}

// enrolCommand is the connector's enroll command inside WireGuard, without
// --state-dir: the token, the broker's public key and endpoint, and the
// tunnel address of the token's peer (its number seq) with the prefix
// length.
func enrolCommand(token string, brokerKey wgnet.Key, endpoint string, prefix netip.Prefix, seq int64) (string, error) {
	addr, err := tunnel.EnrollmentAddress(prefix, seq)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("fieldpass-connector enroll --token %s --broker-key %s --endpoint %s --address %s",
		token, brokerKey, endpoint, netip.PrefixFrom(addr, prefix.Bits())), nil
}

// printEnrolGuide tells the person at the terminal how to install and enrol
// the connector on the device. It goes to stderr: stdout is the token
// alone, for scripts.
func printEnrolGuide(w io.Writer, broker, token, downloadURL, tunnelCmd string) {
	if broker == "" {
		broker = "https://BROKER" // FIELDPASS_PUBLIC_URL, as in broker.env
	}
	fmt.Fprintf(w, "\nOn the device, install the connector (%s) with the line for its system:\n", fieldpass.Version)
	for _, l := range fieldpass.ConnectorInstallLines(downloadURL, fieldpass.Version) {
		fmt.Fprintf(w, "  # %s\n  %s\n", l.Target, l.Command)
	}
	if tunnelCmd != "" {
		fmt.Fprintf(w, "then enrol it (on OpenWrt: --state-dir /etc/fieldpass/state):\n  %s --state-dir /var/lib/fieldpass-connector\n", tunnelCmd)
		fmt.Fprintf(w, "(a connector before v0.5, or built with -tags enroll_https, enrols over HTTPS instead:\n  fieldpass-connector enroll --broker %s --token %s --state-dir /var/lib/fieldpass-connector)\n", broker, token)
	} else {
		fmt.Fprintf(w, "then enrol it (on OpenWrt: --state-dir /etc/fieldpass/state):\n  fieldpass-connector enroll --broker %s --token %s --state-dir /var/lib/fieldpass-connector\n", broker, token)
	}
	fmt.Fprintln(w, "and list its services in /etc/fieldpass/connector.conf before starting it (systemctl enable --now fieldpass-connector).")
}

func (e env) device(ctx context.Context, args []string) error {
	const sub = "Usage: fieldpass-broker device list [--json]\n       fieldpass-broker device disable|enable|decommission NAME\n       fieldpass-broker device keepalive NAME DURATION|default\n       fieldpass-broker device history NAME [--since 24h] [--json]"
	state := func(verb string) subcommand {
		return func(ctx context.Context, args []string) error { return e.deviceState(ctx, verb, args) }
	}
	return e.dispatch(ctx, args, sub, "device subcommand", map[string]subcommand{
		"list":         e.deviceList,
		"ls":           e.deviceList,
		"disable":      state("disable"),
		"enable":       state("enable"),
		"decommission": state("decommission"),
		"history":      e.deviceHistory,
		"keepalive":    e.deviceKeepalive,
	})
}

func (e env) deviceList(ctx context.Context, args []string) error {
	fs := e.flagSet("device list", "device list [--json]")
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
	devs, err := db.Devices(ctx)
	if err != nil {
		return err
	}
	return printList(e, *asJSON, devs, "NAME\tSTATE\tPRESENCE\tLAST SEEN\tENDPOINT\tVERSION\tADDRESS\tKEEPALIVE\tSERVICES\tLABELS", func(d *fieldpass.Device) []string {
		presence := "offline"
		if d.Presence.Online {
			presence = "online"
		}
		return []string{d.Name, string(d.State), presence, ago(d.Presence.LastSeen),
			dash(d.Presence.Endpoint), dash(d.Presence.ConnectorVersion), d.TunnelAddr.String(),
			keepaliveText(d.KeepaliveSeconds), servicesText(d.Services), dash(fieldpass.FormatLabels(d.Labels))}
	})
}

// servicesText shows the services a device's connector announced; "?"
// while none has said (a connector too old to, or never connected).
func servicesText(services []string) string {
	if services == nil {
		return "?"
	}
	return dash(strings.Join(services, ","))
}

// keepaliveText shows a device's keepalive setting; "default" is the
// connector's own --keepalive.
func keepaliveText(seconds int) string {
	if seconds == 0 {
		return "default"
	}
	return fieldpass.FormatDuration(time.Duration(seconds) * time.Second)
}

func (e env) deviceKeepalive(ctx context.Context, args []string) error {
	fs := e.flagSet("device keepalive", "device keepalive NAME DURATION|default\n\n"+
		"Sets the device's WireGuard persistent keepalive, the only traffic of an idle device: it\n"+
		"holds the carrier's NAT mapping open so the broker can reach the device. Longer saves data\n"+
		"on metered SIMs; past the carrier's NAT UDP timeout (commonly 30s to 5m) the device is\n"+
		"reachable only shortly after it last sent. DURATION is whole seconds from "+fieldpass.FormatDuration(fieldpass.MinKeepalive)+" to "+fieldpass.FormatDuration(fieldpass.MaxKeepalive)+",\n"+
		"e.g. 120s or 2m; \"default\" or 0 clears it, and the connector's own --keepalive applies.\n"+
		"The setting overrides the connector's flag. A running broker passes it to the device at once\n"+
		"if it is connected (its sessions stay up), else when it next connects; liveness is judged\n"+
		"by it, so a device at 2m is not called offline after a minute. Recorded in the audit log.")
	dbURL := e.databaseFlag(fs)
	if err := parse(fs, args, 2); err != nil {
		return err
	}
	var keepalive time.Duration
	if v := fs.Arg(1); v != "default" && v != "0" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fs.Usage()
			return usageError{Msg: fmt.Sprintf("keepalive %q: want a duration such as 120s or 2m, or default", v)}
		}
		keepalive = d
	}
	if err := fieldpass.ValidateKeepalive(keepalive); err != nil {
		return usageError{Msg: fieldpass.ErrorMessage(err)}
	}
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	d, err := db.SetDeviceKeepaliveAudited(ctx, e.operatorActor(), fs.Arg(0), keepalive)
	if err != nil {
		return err
	}
	if d.KeepaliveSeconds == 0 {
		fmt.Fprintf(e.stdout, "device %s keepalive is the connector's own (--keepalive)\n", d.Name)
		return nil
	}
	fmt.Fprintf(e.stdout, "device %s keepalive is now %s\n", d.Name, keepaliveText(d.KeepaliveSeconds))
	return nil
}

func (e env) deviceState(ctx context.Context, verb string, args []string) error {
	fs := e.flagSet("device "+verb, "device "+verb+" NAME")
	dbURL := e.databaseFlag(fs)
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	state := map[string]fieldpass.DeviceState{
		"disable":      fieldpass.DeviceDisabled,
		"enable":       fieldpass.DeviceActive,
		"decommission": fieldpass.DeviceDecommissioned,
	}[verb]
	db, err := e.openDB(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	d, err := db.SetDeviceStateAudited(ctx, e.operatorActor(), fs.Arg(0), state)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "device %s is now %s\n", d.Name, d.State)
	return nil
}

func isHelp(s string) bool { return s == "-h" || s == "--help" || s == "help" }

// subcommand runs one verb of a command that has several.
type subcommand func(ctx context.Context, args []string) error

// dispatch runs the subcommand named by args[0] with the remaining args.
// Help prints usage to stdout; a missing or unknown name prints it to stderr
// and fails with a usage error naming what, e.g. "unknown user subcommand".
func (e env) dispatch(ctx context.Context, args []string, usage, what string, subs map[string]subcommand) error {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, usage)
		return usageError{Msg: "missing subcommand"}
	}
	if isHelp(args[0]) {
		fmt.Fprintln(e.stdout, usage)
		return nil
	}
	if run, ok := subs[args[0]]; ok {
		return run(ctx, args[1:])
	}
	fmt.Fprintln(e.stderr, usage)
	return usageError{Msg: fmt.Sprintf("unknown %s %q", what, args[0])}
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	return s + " ago"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
