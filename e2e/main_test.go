//go:build linux

package e2e_test

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// bins holds the paths of the binaries TestMain built. It is set once,
// before any test runs, and only read afterwards.
var bins struct {
	broker, connector, cli string
	devidp                 string // the development OIDC provider
	version                string // what every binary reports as its version
	moduleRoot             string
	// cleanup is the write end of the pipe that keeps the watchdog of the
	// binaries' directory waiting; kept here so it is never collected (and
	// so closed) while tests run.
	cleanup io.WriteCloser
}

// TestMain builds the binaries once per run, then runs the tests with a
// Postgres cluster available (pgtest.Main, which does not return).
func TestMain(m *testing.M) {
	flag.Parse() // for testing.Verbose
	if err := build(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	pgtest.Main(m)
}

func build() error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return fmt.Errorf("not inside a Go module")
	}
	bins.moduleRoot = filepath.Dir(gomod)

	dir, err := os.MkdirTemp("", "fieldpass-e2e-bin-")
	if err != nil {
		return err
	}
	// pgtest.Main exits without returning, so a deferred RemoveAll would never
	// run. A watchdog holding a pipe from this process removes the directory
	// when the pipe closes, which happens however the test binary ends.
	if err := removeOnExit(dir); err != nil {
		os.RemoveAll(dir)
		return err
	}

	// A version of our own makes "the broker sees the connector's version"
	// a real check rather than "dev" == "dev".
	bins.version = fmt.Sprintf("e2e-%d", time.Now().Unix())
	// enroll_https: most tests enrol connectors over the broker's HTTPS
	// API (enroll --broker), which the field build leaves out; the
	// enrolment inside WireGuard is tested as the field build does it too.
	args := []string{"build", "-tags", "enroll_https", "-ldflags", "-X github.com/fieldpass/fieldpass.Version=" + bins.version}
	if raceBuild {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "-o", dir+string(filepath.Separator), "./cmd/...")...)
	cmd.Dir = bins.moduleRoot
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/...: %v\n%s", err, buf.Bytes())
	}
	bins.broker = filepath.Join(dir, "fieldpass-broker")
	bins.connector = filepath.Join(dir, "fieldpass-connector")
	bins.cli = filepath.Join(dir, "fieldpass")
	bins.devidp = filepath.Join(dir, "fieldpass-devidp")
	for _, p := range []string{bins.broker, bins.connector, bins.cli, bins.devidp} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("go build ./cmd/... did not produce %s", filepath.Base(p))
		}
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: built binaries (version %s, race detector %v) in %s\n", bins.version, raceBuild, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// removeOnExit starts a shell that removes dir once this process's end of
// its stdin pipe closes. The write end is deliberately never closed here.
func removeOnExit(dir string) error {
	cmd := exec.Command("/bin/sh", "-c", `read -r _; rm -rf "$1"`, "e2e-cleanup", dir)
	w, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	// Its own process group: a Ctrl-C for the tests must not stop it first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start cleanup watchdog: %w", err)
	}
	bins.cleanup = w
	return nil
}
