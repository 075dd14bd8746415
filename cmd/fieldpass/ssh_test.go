package main

import (
	"os/exec"
	"strings"
	"testing"
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
	got := sshArgs("/opt/fieldpass/bin/fieldpass", "root", "pump-7", []string{"-L", "8080:127.0.0.1:80", "uptime"})
	want := []string{
		"-o", "ProxyCommand=/opt/fieldpass/bin/fieldpass proxy pump-7 ssh",
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
// prints its arguments and the environment it was given.
func TestSSHCommand(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\nfor a in \"$@\"; do echo \"arg:$a\"; done\necho \"env:$FIELDPASS_BROKER $FIELDPASS_TOKEN\"\nexit 3\n"
	if err := writeExecutable(dir+"/ssh", script); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	r := runCLI(t, map[string]string{envBroker: "https://broker.example.com", envToken: tokenA}, "ssh", "root@pump-7", "--", "-v", "uptime")
	if r.code != 3 {
		t.Fatalf("exit %d (%v), want ssh's 3; stderr %s", r.code, r.err, r.stderr)
	}
	want := "arg:-o\narg:ProxyCommand=/opt/fieldpass/bin/fieldpass proxy pump-7 ssh\narg:-o\narg:HostKeyAlias=pump-7.fieldpass\narg:-o\narg:CheckHostIP=no\narg:root@pump-7\narg:-v\narg:uptime\nenv:https://broker.example.com " + tokenA + "\n"
	if r.stdout != want {
		t.Errorf("ssh saw:\n%s\nwant:\n%s", r.stdout, want)
	}
}
