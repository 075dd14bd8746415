//go:build linux

package e2e_test

import (
	"context"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// Services a field device runs, on all of its addresses.
const (
	deviceWebPort  = 80
	deviceEchoPort = 7
)

// fieldSetup is a field network with a broker, one device behind the
// carrier NAT running a connector, sshd, a web interface and an echo
// service, and an engineer with a grant to all three.
type fieldSetup struct {
	f         *fieldNet
	b         *broker
	d         *fieldDevice
	sshd      *sshd
	connector *proc
	stateDir  string
	admin     person
	engineer  person
}

func newFieldSetup(t *testing.T, brokerArgs ...string) *fieldSetup {
	t.Helper()
	needOpenSSH(t)
	f := newFieldNet(t)
	s := &fieldSetup{f: f}
	s.b = f.startBroker(brokerArgs...)
	s.d = f.addDevice("pump-7")
	s.sshd = startSSHDIn(t, s.d.ns)
	s.d.serveWeb(deviceWebPort)
	s.d.serveEcho(deviceEchoPort)
	s.stateDir = s.d.enroll()
	s.connector = s.d.startConnector(s.stateDir,
		"--service", "ssh=127.0.0.1:22",
		"--service", "web=127.0.0.1:80",
		"--service", "echo=127.0.0.1:7")
	s.b.waitDevice("pump-7", 30*time.Second, "online", isOnlineWithEndpoint)
	s.admin = f.person("admin@example.com", fieldpass.RoleAdmin)
	s.engineer = f.person("eng@example.com", fieldpass.RoleEngineer)
	s.admin.mustRun(t, "grant", "create", "--user", "eng@example.com", "--device", "pump-7",
		"--service", "ssh", "--service", "web", "--service", "echo",
		"--duration", "2h", "--reason", "field tests", "--json")
	return s
}

// ssh runs a command on the device through `fieldpass ssh` as the engineer.
func (s *fieldSetup) ssh(t *testing.T, command string) result {
	t.Helper()
	args := append(append([]string{"ssh", s.sshd.user + "@pump-7", "--"}, s.sshd.clientOptions()...), command)
	return s.engineer.run(t, args...)
}

// TestFieldOutboundOnly: the device sits on a private APN behind carrier
// NAT. Nothing reaches it from the engineer's network or from the
// internet, even with a route to the APN, although its sshd and web
// interface listen on all of its addresses; through Fieldpass, the engineer's
// ssh and browser get there.
func TestFieldOutboundOnly(t *testing.T) {
	t.Parallel()
	s := newFieldSetup(t)
	f, d := s.f, s.d

	dev, _ := s.b.device("pump-7")
	if !strings.HasPrefix(dev.Presence.Endpoint, carrierPublicIP+":") {
		t.Errorf("broker sees the device at %q: want the carrier NAT's public address %s", dev.Presence.Endpoint, carrierPublicIP)
	}
	t.Logf("device %s on the APN, seen by the broker at %s", d.addr, dev.Presence.Endpoint)

	sshAddr := d.addr.String() + ":22"
	webAddr := d.addr.String() + ":80"
	// The control: on the device itself, both listen on its APN address.
	for _, a := range []string{sshAddr, webAddr} {
		c, err := d.ns.dial(context.Background(), "tcp", a)
		if err != nil {
			t.Fatalf("on the device, %s does not answer: %v; the checks below would prove nothing", a, err)
		}
		c.Close()
	}
	// From the engineer's network: no route to the APN, and the carrier's
	// public address has nothing listening for anyone.
	for _, a := range []string{sshAddr, webAddr, carrierPublicIP + ":22", carrierPublicIP + ":80"} {
		t.Logf("engineer → %s: %s", a, unreachable(t, f.eng, a, 2*time.Second))
	}
	// From the internet, even someone with a route to the APN through the
	// carrier is dropped: the carrier forwards nothing it did not see leave.
	f.inet.ip(t, "route", "add", "10.64.0.0/16", "via", carrierPublicIP)
	for _, a := range []string{sshAddr, webAddr} {
		t.Logf("internet (with a route to the APN) → %s: %s", a, unreachable(t, f.inet, a, 2*time.Second))
	}
	f.inet.ip(t, "route", "del", "10.64.0.0/16")

	// Through Fieldpass: ssh and the web interface.
	r := s.ssh(t, "echo hello from $(hostname)")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "hello from ") {
		t.Fatalf("%v\nwant ssh through Fieldpass to work", r)
	}
	local, _ := s.engineer.forward(t, "pump-7", "web")
	resp, err := f.eng.httpClient(nil).Get("http://" + local + "/")
	if err != nil {
		t.Fatalf("web interface through fieldpass forward: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "web interface of pump-7\n" {
		t.Fatalf("web interface through fieldpass forward: %q", body)
	}
	// sshd saw the control connection from the device itself and the one
	// session through the connector on its loopback; nothing else.
	var from []string
	for _, m := range regexp.MustCompile(`Connection from (\S+) port`).FindAllStringSubmatch(s.sshd.p.log(), -1) {
		from = append(from, m[1])
	}
	if want := []string{d.addr.String(), "127.0.0.1"}; !slices.Equal(from, want) {
		t.Errorf("sshd saw connections from %v, want %v (the control, then the connector)", from, want)
	}
}
