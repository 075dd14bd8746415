package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker/brokertest"
)

func TestSplitDestination(t *testing.T) {
	for _, tc := range []struct {
		in, user, device string
		ok               bool
	}{
		{"pump-7", "", "pump-7", true},
		{"root@pump-7", "root", "pump-7", true},
		{"root@pump-7.fieldpass", "root", "pump-7", true},
		{"pump-7.fieldpass", "", "pump-7", true},
		{"a@b@pump-7", "a@b", "pump-7", true},
		{"root@", "", "", false},
		{"@pump-7", "", "", false},
		{"root@Pump", "", "", false},
		{"pump-7.example.com", "", "", false},
		{"-oProxyCommand=x", "", "", false},
	} {
		u, d, err := splitDestination(tc.in)
		if (err == nil) != tc.ok || u != tc.user || d != tc.device {
			t.Errorf("splitDestination(%q) = %q, %q, %v; want %q, %q, ok=%v", tc.in, u, d, err, tc.user, tc.device, tc.ok)
		}
	}
}

func TestSSHArgs(t *testing.T) {
	got := sshArgs(viaCommand("/opt/fieldpass/bin/fieldpass", "/tmp/fieldpass-ssh-1/s", "pump-7"), "root", "pump-7", []string{"-L", "8080:127.0.0.1:80", "uptime"})
	want := []string{
		"-o", "ProxyCommand=/opt/fieldpass/bin/fieldpass proxy --socket /tmp/fieldpass-ssh-1/s pump-7 ssh",
		"-o", "HostKeyAlias=pump-7.fieldpass",
		"-o", "CheckHostIP=no",
		"root@pump-7", "-L", "8080:127.0.0.1:80", "uptime",
	}
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := sshArgs("/f", "", "gw-1", nil); got[len(got)-1] != "gw-1" {
		t.Errorf("no user: destination %q, want gw-1", got[len(got)-1])
	}
}

// TestProxyCommandQuoting: a path with spaces, quotes or % survives the
// shell and ssh's %-expansion.
func TestProxyCommandQuoting(t *testing.T) {
	for exe, want := range map[string]string{
		"/usr/bin/fieldpass":       "/usr/bin/fieldpass proxy pump-7 ssh",
		"/home/a b/fieldpass":      "'/home/a b/fieldpass' proxy pump-7 ssh",
		"/home/it's/fieldpass":     `'/home/it'\''s/fieldpass' proxy pump-7 ssh`,
		"/home/100%/fieldpass":     "'/home/100%%/fieldpass' proxy pump-7 ssh",
		"/tmp/$(reboot)/fieldpass": "'/tmp/$(reboot)/fieldpass' proxy pump-7 ssh",
	} {
		if got := proxyCommand(exe, "pump-7"); got != want {
			t.Errorf("proxyCommand(%q) = %q, want %q", exe, got, want)
		}
	}
	// The shell reads the quoted path back as one word.
	exe := "/home/it's a $(x)/fieldpass"
	out, err := exec.Command("/bin/sh", "-c", "printf %s "+shellQuote(exe)).Output()
	if err != nil || string(out) != exe {
		t.Errorf("sh read %q back as %q, %v", exe, out, err)
	}
}

// TestSSHEnv: the broker and token go to ssh (and its proxy) through the
// environment, replacing any inherited ones, never as arguments.
func TestSSHEnv(t *testing.T) {
	got := sshEnv([]string{"HOME=/h", envToken + "=old", "PATH=/bin", envBroker + "=https://old"}, credentials{Broker: "https://b", Token: tokenA})
	want := []string{"HOME=/h", "PATH=/bin", envBroker + "=https://b", envToken + "=" + tokenA}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, a := range sshArgs("/f", "root", "pump-7", nil) {
		if strings.Contains(a, "fpt_") {
			t.Errorf("token on the command line: %q", a)
		}
	}
}

// TestRunSSHExitStatus: fieldpass ssh exits as ssh did.
func TestRunSSHExitStatus(t *testing.T) {
	e, stdout, _ := testEnv(t, nil)
	if err := e.runSSH("/bin/sh", []string{"-c", "echo $FIELDPASS_BROKER; exit 0"}, []string{"FIELDPASS_BROKER=https://b"}); err != nil {
		t.Fatalf("exit 0: %v", err)
	}
	if got := strings.TrimSpace(stdout.String()); got != "https://b" {
		t.Errorf("child saw FIELDPASS_BROKER=%q", got)
	}
	err := e.runSSH("/bin/sh", []string{"-c", "exit 255"}, nil)
	if exitCode(err) != 255 {
		t.Errorf("exit 255: got %v (exit %d)", err, exitCode(err))
	}
	err = e.runSSH("/bin/sh", []string{"-c", "kill -TERM $$"}, nil)
	if exitCode(err) != 128+15 {
		t.Errorf("killed by SIGTERM: got %v (exit %d), want 143", err, exitCode(err))
	}
	if err := e.runSSH("/nonexistent/ssh", nil, nil); err == nil || exitCode(err) != 1 {
		t.Errorf("missing ssh: %v", err)
	}
}

// TestSSHCommand runs "fieldpass ssh" with a stand-in ssh on PATH that
// prints its arguments and the environment it was given, then talks
// through its ProxyCommand to the session fieldpass opened.
func TestSSHCommand(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The stand-in runs the ProxyCommand as ssh would, with this test
	// binary standing in for fieldpass (TestMain runs the CLI when
	// FIELDPASS_TEST_MAIN is set).
	script := "#!/bin/sh\nfor a in \"$@\"; do echo \"arg:$a\"; done\necho \"env:$FIELDPASS_BROKER $FIELDPASS_TOKEN\"\n" +
		"proxy=$(echo \"$2\" | sed 's/^ProxyCommand=//')\necho ping | FIELDPASS_TEST_MAIN=1 sh -c \"$proxy\"\necho\nexit 3\n"
	if err := writeExecutable(dir+"/ssh", script); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":/usr/bin:/bin")
	s := newFakeSession(t, brokertest.Service(t, upper))
	e, stdout, stderr := testEnv(t, map[string]string{envBroker: "https://broker.example.com", envToken: tokenA})
	e.executable = func() (string, error) { return exe, nil }
	e.connect = func(ctx context.Context, device, service string) (session, error) { return s, nil }
	r := runEnv(t, e, stdout, stderr, "ssh", "root@pump-7", "--", "-v", "uptime")
	if r.code != 3 {
		t.Fatalf("exit %d (%v), want ssh's 3; stderr %s", r.code, r.err, r.stderr)
	}
	lines := strings.Split(r.stdout, "\n")
	if len(lines) < 11 || !strings.HasPrefix(lines[1], "arg:ProxyCommand="+exe+" proxy --socket ") ||
		strings.Join(lines[2:9], "\n") != "arg:-o\narg:HostKeyAlias=pump-7.fieldpass\narg:-o\narg:CheckHostIP=no\narg:root@pump-7\narg:-v\narg:uptime" ||
		lines[9] != "env:https://broker.example.com "+tokenA || lines[10] != "PING" {
		t.Errorf("ssh saw:\n%s", r.stdout)
	}
	if s.streams != 1 {
		t.Errorf("%d streams on the session, want the proxy's one", s.streams)
	}
}

// TestSSHRefusedBeforeSSH: a refused session is told once, in the broker's
// words, and ssh never runs to add its own.
func TestSSHRefusedBeforeSSH(t *testing.T) {
	dir := t.TempDir()
	if err := writeExecutable(dir+"/ssh", "#!/bin/sh\necho ssh ran >&2\nexit 255\n"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	e, stdout, stderr := testEnv(t, map[string]string{envBroker: "https://broker.example.com", envToken: tokenA})
	e.connect = func(ctx context.Context, device, service string) (session, error) {
		return nil, fieldpass.Errorf(fieldpass.EFORBIDDEN, "no grant covers pump-7/ssh for eng@example.com")
	}
	r := runEnv(t, e, stdout, stderr, "ssh", "root@pump-7")
	if r.code != 1 || !strings.Contains(r.err.Error(), "no grant covers pump-7/ssh") || strings.Contains(r.stderr, "ssh ran") {
		t.Fatalf("exit %d, err %v, stderr %q: want the refusal alone, exit 1, ssh not run", r.code, r.err, r.stderr)
	}
}
