//go:build linux

package e2e_test

import (
	"crypto/rand"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestEnrollAndRun: start broker -> token -> enrol -> run connector -> the
// device is listed online with its endpoint and connector version.
func TestEnrollAndRun(t *testing.T) {
	t.Parallel()
	b := startBroker(t)

	// migrate is idempotent: the test database is already at the latest
	// version.
	if out := b.mustCLI("migrate"); !strings.Contains(out, "up to date") {
		t.Errorf("migrate printed %q, want it to say the database is up to date", out)
	}

	tok := b.token("pump-7", "--label", "site=north", "--ttl", "10m")
	stateDir := filepath.Join(t.TempDir(), "state")
	r := enrollCmd(t, b.URL(), tok, stateDir)
	if r.code != 0 || !strings.Contains(r.stdout, "enrolled as pump-7") || r.stderr != "" {
		t.Fatalf("enrol: %v", r)
	}
	checkStateDir(t, stateDir)

	d, ok := b.device("pump-7")
	if !ok {
		t.Fatal("device list does not show pump-7 after enrolment")
	}
	if d.State != fieldpass.DeviceActive || d.Presence.Online || d.Labels["site"] != "north" || !d.TunnelAddr.IsValid() {
		t.Errorf("after enrolment: state %s, online %v, labels %v, address %s; want active, offline, site=north, an address",
			d.State, d.Presence.Online, d.Labels, d.TunnelAddr)
	}

	c := startConnector(t, "pump-7", stateDir, "--service", "ssh="+echoService(t), "--max-backoff", "2s")
	_, took := b.waitDevice("pump-7", 20*time.Second, "online", isOnline)
	d, tookEndpoint := b.waitDevice("pump-7", 20*time.Second, "online with endpoint and version", func(d fieldpass.Device) bool {
		return d.Presence.Online && d.Presence.Endpoint != "" && d.Presence.ConnectorVersion != ""
	})
	t.Logf("pump-7 online %s after the connector started; its endpoint listed %s later",
		took.Round(time.Millisecond), tookEndpoint.Round(time.Millisecond))

	if got := d.Presence.ConnectorVersion; got != bins.version {
		t.Errorf("connector version = %q, want %q (the version built in)", got, bins.version)
	}
	ep, err := netip.ParseAddrPort(d.Presence.Endpoint)
	if err != nil {
		t.Fatalf("endpoint %q: %v", d.Presence.Endpoint, err)
	}
	if want := c.udpPort(t); ep.Addr() != netip.MustParseAddr("127.0.0.1") || int(ep.Port()) != want {
		t.Errorf("endpoint = %s, want 127.0.0.1:%d (the connector's WireGuard port)", ep, want)
	}
	if d.Presence.BrokerID != brokerID {
		t.Errorf("broker id = %q, want %q", d.Presence.BrokerID, brokerID)
	}
	if age := time.Since(d.Presence.LastSeen); d.Presence.LastSeen.IsZero() || age > time.Minute || age < -time.Minute {
		t.Errorf("last seen = %v, want about now", d.Presence.LastSeen)
	}

	// The table an operator reads says the same.
	table := b.mustCLI("device", "list")
	if !regexpLine(table, `^pump-7\s+active\s+online\s+.*127\.0\.0\.1:\d+\s+`+bins.version+`\s+`) {
		t.Errorf("device list table does not show pump-7 active and online:\n%s", table)
	}
	if c.exited() {
		t.Fatalf("connector exited: %v", c.err)
	}
}

// checkStateDir checks what enrolment leaves: a 0700 directory with the
// private key alone in a 0600 file, and a state file without it.
func checkStateDir(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v, want 0700", fi.Mode().Perm())
	}
	key, err := os.ReadFile(filepath.Join(dir, "private.key"))
	if err != nil {
		t.Fatal(err)
	}
	state, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"private.key", "state.json"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if k := strings.TrimSpace(string(key)); len(k) != 44 || strings.Contains(string(state), k) {
		t.Errorf("private key must be 44 base64 characters and appear only in private.key")
	}
	if names, _ := dirEntries(dir); len(names) != 2 {
		t.Errorf("state dir holds %v, want private.key and state.json only", names)
	}
}

// TestConnectorOutboundOnly: a running connector holds no listening TCP
// socket, and no UDP socket but WireGuard's, on the port the broker sees.
// It runs with the default --listen (all addresses), as in production.
func TestConnectorOutboundOnly(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	stateDir := b.enroll("gate-1")
	// --listen "" is the default: all addresses, a random port.
	c := startConnector(t, "gate-1", stateDir, "--listen", "", "--service", "web="+echoService(t), "--service", "ssh=127.0.0.1:22")
	d, _ := b.waitDevice("gate-1", 20*time.Second, "online with an endpoint", isOnlineWithEndpoint)
	ep, err := netip.ParseAddrPort(d.Presence.Endpoint)
	if err != nil {
		t.Fatalf("endpoint %q: %v", d.Presence.Endpoint, err)
	}

	socks, err := processSockets(c.pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sockets of the connector (pid %d), WireGuard port %d as the broker sees it:\n%s", c.pid(), ep.Port(), formatSockets(socks))

	udp := 0
	for _, s := range socks {
		switch s.proto {
		case "tcp", "tcp6":
			if s.state == "LISTEN" {
				t.Errorf("fd %d: TCP socket listening on %s: the connector must open no listener", s.fd, s.local)
			}
		case "udp", "udp6":
			udp++
			if s.local.Port() != ep.Port() {
				t.Errorf("fd %d: UDP socket on %s: want only WireGuard's port %d", s.fd, s.local, ep.Port())
			}
		case "raw", "raw6", "packet":
			t.Errorf("fd %d: %s socket: the connector must hold none", s.fd, s.proto)
		}
	}
	if udp == 0 {
		t.Errorf("no UDP socket found: the socket table cannot be right")
	}
}

// TestEnrollTokenErrors: every bad token is refused with one clear line and
// changes nothing, neither on the device (no state dir) nor at the broker
// (device list unchanged, token not used up).
func TestEnrollTokenErrors(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	// Made first, so that its second has passed by the time it is used.
	expired := b.token("late", "--ttl", "1s")
	expiredAt := time.Now().Add(time.Second)

	firstDir := b.enroll("dev-1")
	used := "" // the token dev-1 was enrolled with is gone; make one to reuse
	{
		tok := b.token("dev-2")
		if r := enrollCmd(t, b.URL(), tok, filepath.Join(t.TempDir(), "dev-2")); r.code != 0 {
			t.Fatalf("%v", r)
		}
		used = tok
	}
	before, _ := b.devices()

	for _, tc := range []struct {
		name  string
		token func() string
		want  string // in the one stderr line
	}{
		{"reused", func() string { return used }, "already used"},
		{"expired", func() string {
			time.Sleep(time.Until(expiredAt.Add(200 * time.Millisecond)))
			return expired
		}, "expired"},
		{"unknown", func() string {
			var raw [32]byte
			rand.Read(raw[:])
			return fieldpass.FormatEnrollmentToken(raw)
		}, "unknown enrolment token"},
		{"malformed", func() string { return "fpe_not-a-token" }, "malformed enrolment token"},
		{"not a token at all", func() string { return "hello" }, "malformed enrolment token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token()
			// Both a state dir that does not exist and an empty one that
			// does must come out as they went in.
			for _, exists := range []bool{false, true} {
				dir := filepath.Join(t.TempDir(), "state")
				if exists {
					if err := os.Mkdir(dir, 0o700); err != nil {
						t.Fatal(err)
					}
				}
				r := enrollCmd(t, b.URL(), tok, dir)
				checkOneLineError(t, r, "fieldpass-connector: ", tc.want)
				if strings.Contains(r.stderr+r.stdout, tok) {
					t.Errorf("the output repeats the token: %v", r)
				}
				names, ok := dirEntries(dir)
				if ok != exists || len(names) > 0 {
					t.Errorf("state dir after a refused enrolment: exists %v, holds %v; want exists %v, empty", ok, names, exists)
				}
				if names, _ := dirEntries(filepath.Dir(dir)); len(names) > 1 || (len(names) == 1 && names[0] != "state") {
					t.Errorf("enrol left files beside the state dir: %v", names)
				}
			}
			if after, _ := b.devices(); after != before {
				t.Errorf("device list changed after a refused enrolment:\nbefore %s\nafter %s", before, after)
			}
		})
	}

	t.Run("state dir already enrolled", func(t *testing.T) {
		// A good token into a used state dir is refused before it is sent:
		// the state stays and the token stays usable.
		tok := b.token("dev-3")
		keyBefore, _ := os.ReadFile(filepath.Join(firstDir, "private.key"))
		r := enrollCmd(t, b.URL(), tok, firstDir)
		checkOneLineError(t, r, "fieldpass-connector: ", "already holds an enrolment")
		if keyAfter, _ := os.ReadFile(filepath.Join(firstDir, "private.key")); string(keyAfter) != string(keyBefore) {
			t.Error("the enrolled state dir's key changed")
		}
		if r := enrollCmd(t, b.URL(), tok, filepath.Join(t.TempDir(), "dev-3")); r.code != 0 {
			t.Errorf("the token was spent by the refused enrolment: %v", r)
		}
	})

	t.Run("name already enrolled", func(t *testing.T) {
		r := b.cli("token", "create", "--device", "dev-1")
		checkOneLineError(t, r, "fieldpass-broker: ", `"dev-1" is already enrolled`)
	})

	t.Run("enrol again after decommission", func(t *testing.T) {
		old, _ := b.device("dev-1")
		if out := b.mustCLI("device", "decommission", "dev-1"); !strings.Contains(out, "decommissioned") {
			t.Errorf("decommission printed %q", out)
		}
		if _, ok := b.device("dev-1"); ok {
			t.Error("a decommissioned device is still listed")
		}
		dir := b.enroll("dev-1")
		d, ok := b.device("dev-1")
		if !ok || d.ID == old.ID || d.TunnelAddr == old.TunnelAddr || d.PublicKey == old.PublicKey || d.State != fieldpass.DeviceActive {
			t.Errorf("re-enrolled dev-1: %+v\nold: %+v\nwant a new, active device with a new id, address and key", d, old)
		}
		checkStateDir(t, dir)
	})
}

// checkOneLineError checks a refused command: non-zero exit, nothing on
// stdout, and one stderr line "prefix...want...".
func checkOneLineError(t *testing.T, r result, prefix, want string) {
	t.Helper()
	msg := strings.TrimSuffix(r.stderr, "\n")
	if r.code == 0 || r.stdout != "" || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, want) {
		t.Errorf("%v\nwant a non-zero exit and one stderr line %q containing %q", r, prefix+"...", want)
	}
}

// regexpLine reports whether a line of text matches re.
func regexpLine(text, re string) bool {
	return regexp.MustCompile("(?m)" + re).MatchString(text)
}
