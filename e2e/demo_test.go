//go:build linux

package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs deploy/demo/demo.sh (make demo) with the binaries built for
// this run: it must bring the demo device online, print instructions that
// work, and on Ctrl-C (SIGINT) end every process it started and remove its
// directory.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Postgres cluster of its own")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("demo.sh needs python3")
	}
	t.Parallel()
	outPath := filepath.Join(t.TempDir(), "demo.out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("bash", filepath.Join(bins.moduleRoot, "deploy", "demo", "demo.sh"))
	cmd.Env = env("FIELDPASS_BIN=" + filepath.Dir(bins.broker))
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, as under a terminal; should this test binary
	// die, the script gets SIGTERM and still tears down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	output := func() string { b, _ := os.ReadFile(outPath); return string(b) }
	t.Cleanup(func() {
		select {
		case <-exited:
			return
		default:
		}
		syscall.Kill(cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		t.Logf("demo.sh output:\n%s", output())
	})

	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(output(), "is online") {
		select {
		case <-exited:
			t.Fatalf("demo.sh exited before the device was online: %v\n%s", waitErr, output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo.sh: no device online after 90 s\n%s", output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	text := output()
	m := regexp.MustCompile(`in (/\S*fieldpass-demo\.\w+):`).FindStringSubmatch(text)
	u := regexp.MustCompile(`export FIELDPASS_DATABASE_URL='([^']+)'`).FindStringSubmatch(text)
	if m == nil || u == nil {
		t.Fatalf("demo.sh did not print its directory and database URL:\n%s", text)
	}
	dir := m[1]

	// The printed instructions work.
	r := runCmd(t, env("FIELDPASS_DATABASE_URL="+u[1]), bins.broker, "device", "list")
	if r.code != 0 || !regexpLine(r.stdout, `^demo-device\s+active\s+online`) {
		t.Errorf("the demo's `device list`: %v", r)
	}

	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if ee, ok := waitErr.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
			t.Errorf("demo.sh after SIGINT: %v, want exit status 130", waitErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("demo.sh still running 60 s after SIGINT\n%s", output())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("demo directory %s left behind (%v)", dir, err)
	}
	if left := processesMentioning(dir); len(left) > 0 {
		t.Errorf("processes left running:\n%s", strings.Join(left, "\n"))
	}
	if t.Failed() {
		t.Logf("demo.sh output:\n%s", output())
	}
}

// processesMentioning lists the command lines of running processes that
// contain s.
func processesMentioning(s string) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if line := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(line, s) {
			found = append(found, filepath.Base(filepath.Dir(p))+": "+line)
		}
	}
	return found
}
