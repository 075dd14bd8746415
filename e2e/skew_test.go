//go:build linux

package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestVersionSkew checks the rule of deploy/README.md ("Upgrades"): a
// broker works with connectors and CLIs of the previous release. It builds
// fieldpass-connector and fieldpass at the previous release's tag (from
// git, with the same module cache), enrols that connector with the current
// broker, and carries a session through it from the current CLI and from
// the old one. The release is the newest v* tag reachable from HEAD that
// does not point at HEAD itself (FIELDPASS_SKEW_RELEASE picks another).
func TestVersionSkew(t *testing.T) {
	t.Parallel()
	release, src := checkoutPreviousRelease(t)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X github.com/fieldpass/fieldpass.Version="+release,
		"-o", bin+string(filepath.Separator), "./cmd/fieldpass-connector", "./cmd/fieldpass")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s's connector and CLI: %v\n%s", release, err, out)
	}
	oldConnector, oldCLI := filepath.Join(bin, "fieldpass-connector"), filepath.Join(bin, "fieldpass")

	b := startBroker(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	if r := runCmd(t, env(), oldConnector, "enroll", "--broker", b.URL(), "--token", b.token("pump-7"), "--state-dir", stateDir); r.code != 0 {
		t.Fatalf("the %s connector enrols with this broker: %v", release, r)
	}
	startProc(t, "connector "+release, filepath.Join(t.TempDir(), "connector.log"), env(), oldConnector,
		"run", "--state-dir", stateDir, "--listen", "127.0.0.1:0", "--log-level", "debug", "--service", "echo="+echoService(t))
	d, _ := b.waitDevice("pump-7", 30*time.Second, "online", isOnline)
	if d.Presence.ConnectorVersion != release {
		t.Errorf("the broker lists connector version %q, want %q", d.Presence.ConnectorVersion, release)
	}

	admin := b.tokenPerson("admin@example.com", fieldpass.RoleAdmin)
	engineer := b.tokenPerson("engineer@example.com", fieldpass.RoleEngineer)
	admin.mustRun(t, "grant", "create", "--user", "engineer@example.com", "--device", "pump-7", "--service", "echo",
		"--duration", "10m", "--reason", "version skew test")
	for _, cli := range []struct{ name, bin string }{{"this release's CLI", bins.cli}, {release + "'s CLI", oldCLI}} {
		t.Run(cli.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const line = "through an older connector\n"
			cmd := exec.CommandContext(ctx, cli.bin, "proxy", "pump-7", "echo")
			cmd.Env, cmd.Stdin = engineer.env, strings.NewReader(line)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil || string(out) != line {
				t.Fatalf("%s proxy pump-7 echo: %v, stdout %q, stderr %q; want the line echoed", cli.name, err, out, stderr.String())
			}
		})
	}
	auditor := b.tokenPerson("auditor@example.com", fieldpass.RoleAuditor)
	ended := 0
	for _, s := range auditor.sessions(t) {
		if s.Device == "pump-7" && !s.Open() {
			ended++
		}
	}
	if ended != 2 {
		t.Errorf("%d ended sessions on pump-7 recorded, want 2 (one per CLI)", ended)
	}
}

// checkoutPreviousRelease extracts the tree of the previous tagged release
// into a temporary directory and returns the tag and the directory. It
// skips the test only where there is no git history (a source tarball).
func checkoutPreviousRelease(t *testing.T) (release, dir string) {
	t.Helper()
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-C", bins.moduleRoot}, args...)...)
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok {
			err = &gitError{args: args, err: err, stderr: string(ee.Stderr)}
		}
		return strings.TrimSpace(string(out)), err
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: the version-skew test builds the previous release from its tag")
	}
	if _, err := git("rev-parse", "--verify", "HEAD"); err != nil {
		t.Skipf("no git history here (a source tarball?): the version-skew test builds the previous release from its tag (%v)", err)
	}
	release = os.Getenv("FIELDPASS_SKEW_RELEASE")
	if release == "" {
		merged, err := git("tag", "--merged", "HEAD", "--sort=-v:refname", "--list", "v*")
		if err != nil {
			t.Fatal(err)
		}
		atHead, err := git("tag", "--points-at", "HEAD", "--list", "v*")
		if err != nil {
			t.Fatal(err)
		}
		tags := strings.Fields(merged)
		for _, tag := range tags {
			if !strings.Contains(" "+strings.Join(strings.Fields(atHead), " ")+" ", " "+tag+" ") {
				release = tag
				break
			}
		}
		if release == "" && len(tags) > 0 {
			release = tags[0] // HEAD is the only release: at least old binaries against a new process
		}
		if release == "" {
			t.Fatal("no v* tag reachable from HEAD: fetch the tags (git fetch --tags) or set FIELDPASS_SKEW_RELEASE")
		}
	}
	dir = t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "archive", bins.moduleRoot, release, dir)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract %s: %v\n%s", release, err, out)
	}
	t.Logf("previous release: %s", release)
	return release, dir
}

type gitError struct {
	args   []string
	err    error
	stderr string
}

func (e *gitError) Error() string {
	return "git " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + strings.TrimSpace(e.stderr)
}
