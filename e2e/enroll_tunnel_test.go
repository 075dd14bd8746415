//go:build linux

package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fieldConnector is the connector as make dist builds it for field
// hardware: without -tags enroll_https, so it links no crypto/tls and
// enrols inside WireGuard only.
var fieldConnector struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

func fieldConnectorBin(t *testing.T) string {
	t.Helper()
	fieldConnector.once.Do(func() {
		fieldConnector.path = filepath.Join(filepath.Dir(bins.connector), "field", "fieldpass-connector")
		// As make dist builds it: static and stripped.
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X github.com/fieldpass/fieldpass.Version="+bins.version,
			"-o", fieldConnector.path, "./cmd/fieldpass-connector")
		cmd.Dir = bins.moduleRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		fieldConnector.out, fieldConnector.err = cmd.CombinedOutput()
	})
	if fieldConnector.err != nil {
		t.Fatalf("build the field connector: %v\n%s", fieldConnector.err, fieldConnector.out)
	}
	return fieldConnector.path
}

// TestEnrollInTunnel: token create prints the enrol command inside
// WireGuard; the field build of the connector, which has no TLS, runs it
// as printed, then comes online; the HTTPS form is refused by the field
// build with what to do instead. (A token's second use and an expired
// token's peer: broker's TestEnrollInTunnel*.)
func TestEnrollInTunnel(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	bin := fieldConnectorBin(t)
	r := b.cli("token", "create", "--device", "pump-w", "--key-file", b.keyFile, "--wg-endpoint", b.wgAddr)
	if r.code != 0 {
		t.Fatalf("token create: %v", r)
	}
	var line string
	for _, l := range strings.Split(r.stderr, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "fieldpass-connector enroll --token ") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("token create printed no enrol command inside WireGuard:\n%s", r.stderr)
	}
	args := strings.Fields(line)[1:]
	stateDir := filepath.Join(t.TempDir(), "state")
	args[len(args)-1] = stateDir // --state-dir /var/lib/fieldpass-connector, here a temp dir
	er := runCmd(t, env(), bin, args...)
	if er.code != 0 || !strings.Contains(er.stdout, "enrolled as pump-w") {
		t.Fatalf("enrol inside WireGuard: %v", er)
	}
	checkStateDir(t, stateDir)

	field := startProc(t, "connector pump-w (field build)", filepath.Join(t.TempDir(), "connector-pump-w.log"), env(), bin,
		"run", "--state-dir", stateDir, "--log-level", "debug", "--listen", "127.0.0.1:0", "--service", "ssh="+echoService(t), "--max-backoff", "2s")
	b.waitDevice("pump-w", 20*time.Second, "online", isOnline)

	// Idle RSS of the field build beside the e2e build with HTTPS
	// enrolment (crypto/tls and cgo linked, not stripped), both online and
	// idle for 5 s: a figure for the log, not a limit. Of the field build's,
	// about 2 MB is anonymous memory; the rest is the binary's pages.
	withTLS := startConnector(t, "pump-t", b.enroll("pump-t"), "--service", "ssh="+echoService(t), "--max-backoff", "2s")
	b.waitDevice("pump-t", 20*time.Second, "online", isOnline)
	time.Sleep(5 * time.Second)
	fieldKB, err1 := procStatusKB(field.pid(), "VmRSS")
	tlsKB, err2 := procStatusKB(withTLS.pid(), "VmRSS")
	if err1 == nil && err2 == nil {
		t.Logf("idle connector RSS: field build (no TLS) %.1f MiB; with HTTPS enrolment %.1f MiB", float64(fieldKB)/1024, float64(tlsKB)/1024)
	}

	tok := b.token("pump-x")
	r = runCmd(t, env(), bin, "enroll", "--broker", b.URL(), "--token", tok, "--state-dir", filepath.Join(t.TempDir(), "x"))
	if r.code != 2 || !strings.Contains(r.stderr, "inside WireGuard only") {
		t.Errorf("HTTPS enrolment with the field build: %v; want exit 2 saying it enrols inside WireGuard only", r)
	}
}
