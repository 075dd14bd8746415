//go:build linux

package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestVersionSkew checks the rule of deploy/README.md ("Upgrades"): a
// broker works with connectors and CLIs of the previous release. It builds
// fieldpass-connector and fieldpass at the previous release (from
// git, with the same module cache), enrols that connector with the current
// broker, and carries a session through it from the current CLI and from
// the old one. The release is the newest of deploy/RELEASES before HEAD
// (FIELDPASS_SKEW_RELEASE picks another).
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

// checkoutPreviousRelease extracts the tree of the previous release into a
// temporary directory and returns its version and the directory. The
// releases are listed in deploy/RELEASES (a clone may have no tags): the
// previous one is the newest whose commit is an ancestor of HEAD and not
// HEAD itself. It skips the test only where there is no git history (a
// source tarball).
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
		t.Skip("git is not installed: the version-skew test builds the previous release from git")
	}
	head, err := git("rev-parse", "--verify", "HEAD")
	if err != nil {
		t.Skipf("no git history here (a source tarball?): the version-skew test builds the previous release from git (%v)", err)
	}
	releases := readReleases(t, filepath.Join(bins.moduleRoot, "deploy", "RELEASES"))
	for _, r := range releases {
		// A tag that is here must be where the list says.
		if c, err := git("rev-parse", "--verify", "--quiet", "refs/tags/"+r.version+"^{commit}"); err == nil && c != r.commit {
			t.Errorf("tag %s is commit %s, deploy/RELEASES says %s", r.version, c, r.commit)
		}
	}
	if tags, err := git("tag", "--merged", "HEAD", "--list", "v*"); err == nil {
		for _, tag := range strings.Fields(tags) {
			if !slices.ContainsFunc(releases, func(r releaseLine) bool { return r.version == tag }) {
				t.Errorf("tag %s is not listed in deploy/RELEASES", tag)
			}
		}
	}

	var commit string
	want := os.Getenv("FIELDPASS_SKEW_RELEASE")
	for i := len(releases) - 1; i >= 0 && commit == ""; i-- {
		r := releases[i]
		if want != "" && r.version != want || want == "" && r.commit == head && i > 0 {
			continue // HEAD is this release: test against the one before
		}
		if _, err := git("cat-file", "-e", r.commit+"^{commit}"); err != nil {
			// A shallow clone: fetch that one commit from where this came.
			if _, ferr := git("fetch", "--quiet", "--no-tags", "--depth=1", "origin", r.commit); ferr != nil {
				t.Fatalf("release %s's commit %s is not in this clone and could not be fetched (%v): clone with history (git fetch --unshallow)", r.version, r.commit, ferr)
			}
		}
		release, commit = r.version, r.commit
	}
	if commit == "" {
		t.Fatalf("no release to test against in deploy/RELEASES (FIELDPASS_SKEW_RELEASE=%q)", want)
	}
	dir = t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "archive", bins.moduleRoot, commit, dir)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract %s (%s): %v\n%s", release, commit, err, out)
	}
	t.Logf("previous release: %s (%s)", release, commit)
	return release, dir
}

// releaseLine is one line of deploy/RELEASES.
type releaseLine struct{ version, commit string }

func readReleases(t *testing.T, path string) []releaseLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []releaseLine
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 || !strings.HasPrefix(f[0], "v") || len(f[1]) != 40 {
			t.Fatalf("%s:%d: want \"vX.Y.Z COMMIT\" (a full commit hash), got %q", path, i+1, line)
		}
		out = append(out, releaseLine{f[0], f[1]})
	}
	if len(out) == 0 {
		t.Fatalf("%s lists no release", path)
	}
	return out
}

type gitError struct {
	args   []string
	err    error
	stderr string
}

func (e *gitError) Error() string {
	return "git " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + strings.TrimSpace(e.stderr)
}
