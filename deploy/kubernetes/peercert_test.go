package kubernetes_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPeerCertificateCommands runs the openssl commands secrets.example.yaml
// gives for the link between brokers, and links two brokers of the fleet
// overlay with what they make, as serve does (--peer-cert, --peer-key,
// --peer-ca; the dialer checks the name in --peer-addr).
func TestPeerCertificateCommands(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	// The commands: the comment lines from the first openssl to the
	// kubectl that stores the result, continuations joined.
	var script []string
	in := false
	for _, line := range strings.Split(string(readFileT(t, "secrets.example.yaml")), "\n") {
		cmd, ok := strings.CutPrefix(line, "#   ")
		if !ok {
			in = false
			continue
		}
		if strings.HasPrefix(cmd, "openssl req -x509") {
			in = true
		}
		if in {
			script = append(script, cmd)
		}
	}
	text := strings.Join(script, "\n")
	cmds, _, found := strings.Cut(text, "kubectl -n fieldpass create secret generic fieldpass-broker-peer")
	if !found || !strings.Contains(cmds, "openssl x509") {
		t.Fatalf("secrets.example.yaml: no openssl commands for fieldpass-broker-peer found:\n%s", text)
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", cmds)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the commands of secrets.example.yaml failed: %v\n%s\n%s", err, cmds, out)
	}

	// What the fleet overlay's pods are: --peer-addr for fieldpass-broker-1
	// in namespace fieldpass, as the kubelet expands it.
	objs := render(t, "overlays/fleet")
	var addr string
	for _, o := range objs {
		if o.kind() == "StatefulSet" {
			addr = flags(t, container(t, get(o.m, "spec", "template", "spec"), "broker"))["peer-addr"]
		}
	}
	addr = strings.NewReplacer("$(POD_NAME)", "fieldpass-broker-1", "$(POD_NAMESPACE)", "fieldpass").Replace(addr)
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("--peer-addr %q: %v", addr, err)
	}

	// serve's configurations (cmd/fieldpass-broker/serve_fleet.go).
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "peer.crt"), filepath.Join(dir, "peer.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "peer-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("peer-ca.crt holds no certificate")
	}
	server := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS13}
	client := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS13}
	// Each side as a broker's: the server decides (it wants the client's
	// certificate); the client reads until the server is done, which sees
	// its verdict (TLS 1.3's client finishes first).
	handshake := func(client *tls.Config) error {
		a, b := net.Pipe()
		defer a.Close()
		errc := make(chan error, 1)
		go func() {
			err := tls.Server(b, server).Handshake()
			b.Close()
			errc <- err
		}()
		c := tls.Client(a, client)
		if err := c.Handshake(); err != nil {
			a.Close()
			<-errc
			return err
		}
		c.Read(make([]byte, 1))
		return <-errc
	}
	if err := handshake(client); err != nil {
		t.Fatalf("fieldpass-broker-0 cannot link to %s with the certificate made as documented: %v", addr, err)
	}
	// The name is checked: the certificate is for the broker pods alone.
	other := client.Clone()
	other.ServerName = "fieldpass-db-rw.fieldpass.svc"
	if err := handshake(other); err == nil {
		t.Errorf("the link's certificate is valid for %s too", other.ServerName)
	}
}
