//go:build linux

package e2e_test

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestHelp: every command and subcommand answers -h with its usage, and
// a mistyped command is refused with a clear error. -h prints the help on
// stdout and exits 0 in all three binaries; it is not an error, so no
// "PROG: ..." error line follows.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		bin  string
		args string
	}{
		{bins.broker, "-h"},
		{bins.broker, "--help"},
		{bins.broker, "help"},
		{bins.broker, "serve -h"},
		{bins.broker, "migrate -h"},
		{bins.broker, "token -h"},
		{bins.broker, "token create -h"},
		{bins.broker, "device -h"},
		{bins.broker, "device list -h"},
		{bins.broker, "device disable -h"},
		{bins.broker, "device enable -h"},
		{bins.broker, "device decommission -h"},
		{bins.broker, "version -h"},
		{bins.connector, "-h"},
		{bins.connector, "--help"},
		{bins.connector, "help"},
		{bins.connector, "enroll -h"},
		{bins.connector, "run -h"},
		{bins.connector, "version -h"},
		{bins.cli, "-h"},
		{bins.cli, "--help"},
		{bins.cli, "help"},
		{bins.cli, "version -h"},
	} {
		prog := filepath.Base(tc.bin)
		t.Run(prog+" "+tc.args, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, env(), tc.bin, strings.Fields(tc.args)...)
			out := r.stdout + r.stderr
			if r.code != 0 {
				t.Errorf("exit %d, want 0\n%v", r.code, r)
			}
			if !strings.Contains(out, "Usage") {
				t.Errorf("no usage printed\n%v", r)
			}
			if line := errorLine(r.stderr, prog); line != "" {
				t.Errorf("-h answered with an error line %q\n%v", line, r)
			}
		})
	}

	for _, tc := range []struct {
		bin, args, want string
	}{
		{bins.broker, "", "no command given"},
		{bins.broker, "bogus", `unknown command "bogus"`},
		{bins.broker, "token bogus", `unknown token subcommand "bogus"`},
		{bins.broker, "device bogus", `unknown device subcommand "bogus"`},
		{bins.broker, "serve --bogus", "flag provided but not defined: -bogus"},
		{bins.broker, "device disable", "missing argument"},
		{bins.connector, "", "no command given"},
		{bins.connector, "bogus", `unknown command "bogus"`},
		{bins.connector, "run --bogus", "flag provided but not defined: -bogus"},
		{bins.cli, "", "no command given"},
		{bins.cli, "bogus", `unknown command "bogus"`},
	} {
		prog := filepath.Base(tc.bin)
		t.Run(strings.TrimSpace(prog+" "+tc.args), func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, env(), tc.bin, strings.Fields(tc.args)...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2 (usage error)\n%v", r.code, r)
			}
			if line := errorLine(r.stderr, prog); line != prog+": "+tc.want {
				t.Errorf("error line %q, want %q\n%v", line, prog+": "+tc.want, r)
			}
			if !strings.Contains(r.stderr, "Usage") {
				t.Errorf("no usage shown with the error\n%v", r)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

// errorLine returns the "prog: ..." line of stderr, which the binaries print
// for an error, or "".
func errorLine(stderr, prog string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, prog+": ") && !strings.HasPrefix(l, prog+": the Fieldpass") {
			return l
		}
	}
	return ""
}
