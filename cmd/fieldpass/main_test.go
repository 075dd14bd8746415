package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestMain(m *testing.M) {
	// A test's stand-in ssh runs this binary as fieldpass, for its
	// ProxyCommand (TestSSHCommand).
	if os.Getenv("FIELDPASS_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	pgtest.Main(m)
}

// result is what one run of the CLI did.
type result struct {
	err            error
	code           int
	stdout, stderr string
}

// testEnv is a CLI environment with its own config directory and the
// variables in vars; nothing comes from the test process's environment.
func testEnv(t *testing.T, vars map[string]string) (*env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	if vars == nil {
		vars = map[string]string{}
	}
	if _, ok := vars["XDG_CONFIG_HOME"]; !ok {
		vars["XDG_CONFIG_HOME"] = t.TempDir()
	}
	var stdout, stderr bytes.Buffer
	e := newEnv(func(k string) string { return vars[k] }, strings.NewReader(""), &stdout, &stderr)
	e.executable = func() (string, error) { return "/opt/fieldpass/bin/fieldpass", nil }
	return e, &stdout, &stderr
}

func runEnv(t *testing.T, e *env, stdout, stderr *bytes.Buffer, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := e.run(ctx, args)
	return result{err: err, code: exitCode(err), stdout: stdout.String(), stderr: stderr.String()}
}

// runCLI runs the CLI once in a fresh environment with vars.
func runCLI(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	e, stdout, stderr := testEnv(t, vars)
	return runEnv(t, e, stdout, stderr, args...)
}

// TestHelp: -h works on every command and subcommand, prints on stdout and
// succeeds.
func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, "fieldpass login --broker URL"},
		{[]string{"help"}, "fieldpass sessions [--device D]"},
		{[]string{"login", "-h"}, "Usage: fieldpass login --broker URL"},
		{[]string{"logout", "-h"}, "Usage: fieldpass logout"},
		{[]string{"devices", "-h"}, "Usage: fieldpass devices [--json]"},
		{[]string{"ssh", "-h"}, "Usage: fieldpass ssh [user@]DEVICE [-- ssh args]"},
		{[]string{"proxy", "-h"}, "Usage: fieldpass proxy DEVICE SERVICE"},
		{[]string{"forward", "-h"}, "Usage: fieldpass forward DEVICE SERVICE [LOCAL_ADDR]"},
		{[]string{"config", "-h"}, "fieldpass config ssh"},
		{[]string{"config", "ssh", "-h"}, "Usage: fieldpass config ssh"},
		{[]string{"grant", "-h"}, "fieldpass grant revoke ID"},
		{[]string{"grant", "create", "-h"}, "--until"},
		{[]string{"grant", "list", "-h"}, "Usage: fieldpass grant list [--json]"},
		{[]string{"grant", "revoke", "--help"}, "Usage: fieldpass grant revoke ID"},
		{[]string{"request", "-h"}, "fieldpass request approve|deny ID"},
		{[]string{"request", "create", "-h"}, "--wait"},
		{[]string{"request", "list", "-h"}, "Usage: fieldpass request list [--json]"},
		{[]string{"request", "approve", "-h"}, "Usage: fieldpass request approve ID"},
		{[]string{"request", "deny", "-h"}, "Usage: fieldpass request deny ID"},
		{[]string{"sessions", "-h"}, "--csv"},
		{[]string{"audit", "-h"}, "--action"},
		{[]string{"version", "-h"}, "Usage: fieldpass version"},
		{[]string{"help", "grant", "create"}, "--reason"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, nil, tc.args...)
			if r.code != 0 {
				t.Fatalf("exit %d (%v), want 0; stderr:\n%s", r.code, r.err, r.stderr)
			}
			if !strings.Contains(r.stdout, tc.want) {
				t.Errorf("stdout lacks %q:\n%s", tc.want, r.stdout)
			}
		})
	}
}

// TestUsageErrors: bad command lines exit 2 with a message, before any
// credentials are looked for (there are none here).
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"devices", "extra"}, `unexpected argument "extra"`},
		{[]string{"devices", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"version", "x"}, "unexpected argument"},
		{[]string{"logout", "x"}, "unexpected argument"},
		{[]string{"grant"}, "no subcommand given"},
		{[]string{"grant", "give"}, `unknown grant subcommand "give"`},
		{[]string{"grant", "create", "--device", "pump-7", "--service", "ssh", "--duration", "4h", "--reason", "r"}, "--user is required"},
		{[]string{"grant", "create", "--user", "a@example.com", "--device", "pump-7", "--label", "site=north", "--service", "ssh", "--duration", "4h", "--reason", "r"}, "not both"},
		{[]string{"grant", "create", "--user", "a@example.com", "--service", "ssh", "--duration", "4h", "--reason", "r"}, "give --device NAME or --label k=v"},
		{[]string{"grant", "create", "--user", "a@example.com", "--device", "Pump_7", "--service", "ssh", "--duration", "4h", "--reason", "r"}, "invalid device name"},
		{[]string{"grant", "create", "--user", "a@example.com", "--label", "site", "--service", "ssh", "--duration", "4h", "--reason", "r"}, "want key=value"},
		{[]string{"grant", "create", "--user", "a@example.com", "--device", "pump-7", "--duration", "4h", "--reason", "r"}, "--service"},
		{[]string{"grant", "create", "--user", "a@example.com", "--device", "pump-7", "--service", "ssh", "--reason", "r"}, "every grant ends"},
		{[]string{"grant", "create", "--user", "a@example.com", "--device", "pump-7", "--service", "ssh", "--duration", "4h", "--until", "2099-01-01T00:00:00Z", "--reason", "r"}, "--duration or --until, not both"},
		{[]string{"grant", "create", "--user", "a@example.com", "--device", "pump-7", "--service", "ssh", "--duration", "-4h", "--reason", "r"}, "must be positive"},
		{[]string{"grant", "create", "--user", "a@example.com", "--device", "pump-7", "--service", "ssh", "--until", "tomorrow", "--reason", "r"}, "want RFC 3339"},
		{[]string{"grant", "create", "--user", "a@example.com", "--device", "pump-7", "--service", "ssh", "--until", "2001-01-01T00:00:00Z", "--reason", "r"}, "in the past"},
		{[]string{"grant", "create", "--user", "a@example.com", "--device", "pump-7", "--service", "ssh", "--duration", "4h"}, "--reason is required"},
		{[]string{"grant", "revoke"}, "missing argument"},
		{[]string{"grant", "revoke", "a", "b"}, `unexpected argument "b"`},
		{[]string{"request", "approve"}, "missing argument"},
		{[]string{"request", "create", "--service", "ssh", "--duration", "1h", "--reason", "r"}, "--device"},
		{[]string{"request", "create", "--device", "pump-7", "--service", "ssh", "--reason", "r"}, "--duration is required"},
		{[]string{"request", "create", "--device", "pump-7", "--service", "ssh", "--duration", "soon", "--reason", "r"}, "invalid duration"},
		{[]string{"request", "create", "--device", "pump-7", "--service", "ssh", "--duration", "1h"}, "--reason is required"},
		{[]string{"request", "list", "--status", "maybe"}, "want pending, approved or denied"},
		{[]string{"sessions", "--json", "--csv"}, "not both"},
		{[]string{"sessions", "--since", "last week"}, "--since"},
		{[]string{"audit", "--limit", "5000"}, "--limit"},
		{[]string{"proxy", "pump-7"}, "missing argument"},
		{[]string{"proxy", "pump-7", "SSH"}, "invalid service name"},
		{[]string{"forward", "pump-7", "web", "1:2:3"}, "invalid local address"},
		{[]string{"forward", "pump-7", "web", "a", "b"}, "unexpected argument"},
		{[]string{"ssh"}, "missing argument"},
		{[]string{"ssh", "root@"}, "invalid device name"},
		{[]string{"ssh", "@pump-7"}, "empty user name"},
		{[]string{"config"}, "no subcommand given"},
		{[]string{"config", "git"}, `unknown config subcommand "git"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, nil, tc.args...)
			if r.code != 2 {
				t.Fatalf("exit %d (%v), want 2", r.code, r.err)
			}
			if !strings.Contains(message(r.err), tc.want) {
				t.Errorf("error %q, want it to contain %q", message(r.err), tc.want)
			}
			if !strings.Contains(r.stderr, "Usage") {
				t.Errorf("no usage on stderr:\n%s", r.stderr)
			}
		})
	}
}

func TestFlagsAfterArguments(t *testing.T) {
	e, _, _ := testEnv(t, nil)
	fs := e.flagSet("x ID", "")
	j := fs.Bool("json", false, "")
	pos, err := fs.parse([]string{"g1", "--json", "--", "--not-a-flag"}, 1, -1)
	if err != nil {
		t.Fatal(err)
	}
	if !*j || strings.Join(pos, " ") != "g1 --not-a-flag" {
		t.Errorf("got json=%v pos=%q, want true [g1 --not-a-flag]", *j, pos)
	}
}

func TestVersion(t *testing.T) {
	r := runCLI(t, nil, "version")
	if r.err != nil || strings.TrimSpace(r.stdout) == "" {
		t.Fatalf("version: %v, %q", r.err, r.stdout)
	}
}

// TestRunUsesItsWriters: the exported run prints where it is told.
func TestRunUsesItsWriters(t *testing.T) {
	var out, errw bytes.Buffer
	err := run(context.Background(), []string{"version"}, func(string) string { return "" }, strings.NewReader(""), &out, &errw)
	if err != nil || out.Len() == 0 || errw.Len() != 0 {
		t.Fatalf("run version: %v, stdout %q, stderr %q", err, out.String(), errw.String())
	}
}

func TestConfigSSH(t *testing.T) {
	r := runCLI(t, nil, "config", "ssh")
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := `# Fieldpass: "ssh [user@]DEVICE.fieldpass" reaches DEVICE through the broker.
Host *.fieldpass
    ProxyCommand /opt/fieldpass/bin/fieldpass proxy %n ssh
    CheckHostIP no
`
	if r.stdout != want {
		t.Errorf("got:\n%s\nwant:\n%s", r.stdout, want)
	}
}

// TestNotLoggedIn: commands that need the broker say how to log in.
func TestNotLoggedIn(t *testing.T) {
	for _, args := range [][]string{{"devices"}, {"grant", "list"}, {"sessions"}, {"audit"}, {"proxy", "pump-7", "ssh"}, {"ssh", "pump-7"}} {
		r := runCLI(t, nil, args...)
		if r.code != 1 || !strings.Contains(message(r.err), "fieldpass login") {
			t.Errorf("%v: exit %d, %v; want 1 and a hint to log in", args, r.code, r.err)
		}
	}
}

func TestMessageAndExitCode(t *testing.T) {
	if got := exitCode(exitError{code: 7}); got != 7 {
		t.Errorf("exitError 7: exit %d", got)
	}
	if got := exitCode(errHelp); got != 0 {
		t.Errorf("help: exit %d", got)
	}
	if got := exitCode(usageError{Msg: "x"}); got != 2 {
		t.Errorf("usage: exit %d", got)
	}
	if got := exitCode(os.ErrNotExist); got != 1 {
		t.Errorf("other: exit %d", got)
	}
}

// TestUsageErrorsAreShort: a usage error shows the synopsis and where the
// rest is, then the error: not every flag above it.
func TestUsageErrorsAreShort(t *testing.T) {
	r := runCLI(t, nil, "grant", "create", "--no-such-flag")
	if r.code != 2 {
		t.Fatalf("exit %d, want 2: %v", r.code, r.err)
	}
	if n := strings.Count(r.stderr, "\n"); n > 2 || !strings.Contains(r.stderr, `Run "fieldpass grant create -h"`) {
		t.Errorf("usage error printed %d lines:\n%s", n, r.stderr)
	}
}

// TestREADMECoversUsage: every command of fieldpass -h, and every flag its
// synopsis names, appears in the README's section for people (issue 11).
func TestREADMECoversUsage(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	start := strings.Index(readme, "## People")
	end := strings.Index(readme[start+1:], "\n## ")
	if start < 0 || end < 0 {
		t.Fatal("README has no section for people (## People ...)")
	}
	people := readme[start : start+1+end]
	flagRE := regexp.MustCompile(`--[a-z][a-z-]*`)
	n := 0
	for _, line := range strings.Split(usage, "\n") {
		words := strings.Fields(line)
		if len(words) < 2 || words[0] != "fieldpass" {
			continue
		}
		n++
		cmd := []string{"fieldpass"}
		for _, w := range words[1:] {
			if strings.ContainsAny(w[:1], "-[(") || w == strings.ToUpper(w) || strings.Contains(w, "@") {
				break
			}
			cmd = append(cmd, w)
		}
		if c := strings.Join(cmd, " "); !strings.Contains(people, c) {
			t.Errorf("the README's section for people does not show %q", c)
		}
		for _, f := range flagRE.FindAllString(line, -1) {
			if !strings.Contains(people, f) {
				t.Errorf("the README's section for people does not show %s (%s)", f, strings.Join(cmd, " "))
			}
		}
	}
	if n < 15 {
		t.Fatalf("read only %d commands from the usage text", n)
	}
}
