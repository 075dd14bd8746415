// Package depcheck pins what each Fieldpass binary links, for the TestDeps
// of each folder in cmd/ (the habit of Tailscale's depaware files): the
// binary's non-standard packages, as go list reports them, are kept in a
// deps.txt beside it, so that a new dependency shows up in review as a
// changed line, and a deny-list fails a binary that links what it must
// never link (the CLI and the connector a database, router or OIDC library),
// however deps.txt was regenerated.
//
// Only tests import it: it is in no binary's own graph.
package depcheck

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// Env is the build the packages are listed for: the release build's
// (Makefile: CGO_ENABLED=0, GOOS=linux), on amd64, so that deps.txt reads the
// same on every machine that regenerates it.
var Env = []string{"GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0"}

// List returns, sorted, the non-standard packages the package in dir links
// (itself included), through go list -deps. It skips t when there is no go
// command.
func List(t testing.TB, dir string) []string {
	t.Helper()
	gobin := goCommand()
	if gobin == "" {
		t.Skip("depcheck: no go command (neither $GOROOT/bin/go nor go on PATH): dependencies not checked")
	}
	cmd := exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), Env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps in %s: %v\n%s", dir, err, stderr.Bytes())
	}
	var pkgs []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			pkgs = append(pkgs, l)
		}
	}
	slices.Sort(pkgs)
	return slices.Compact(pkgs)
}

func goCommand() string {
	name := "go"
	if runtime.GOOS == "windows" {
		name = "go.exe"
	}
	if p := filepath.Join(runtime.GOROOT(), "bin", name); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Pinned compares got with the list in file (one package per line, sorted;
// lines starting with # are comments), and fails t with what entered, what
// left, and regen, the command that rewrites the file. With update it
// rewrites the file instead, with a header saying what it is and regen.
func Pinned(t testing.TB, got []string, file string, update bool, regen string) {
	t.Helper()
	if update {
		var b strings.Builder
		fmt.Fprintf(&b, "# The packages outside the standard library that this binary links\n"+
			"# (go list -deps, %s), sorted. TestDeps fails when they change;\n"+
			"# when the change is meant, regenerate this file and commit it with the change:\n"+
			"#   %s\n", strings.Join(Env, " "), regen)
		for _, p := range got {
			b.WriteString(p + "\n")
		}
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s: %d packages", file, len(got))
		return
	}
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s is missing; write it with: %s", file, regen)
	}
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			want = append(want, l)
		}
	}
	slices.Sort(want)
	entered := missing(got, want)
	left := missing(want, got)
	if len(entered) == 0 && len(left) == 0 {
		return
	}
	var msg strings.Builder
	fmt.Fprintf(&msg, "the packages linked differ from %s:\n", file)
	for _, p := range entered {
		fmt.Fprintf(&msg, "  + %s (entered)\n", p)
	}
	for _, p := range left {
		fmt.Fprintf(&msg, "  - %s (left)\n", p)
	}
	fmt.Fprintf(&msg, "if the change is meant, regenerate the file and commit it with the change: %s", regen)
	t.Error(msg.String())
}

// missing returns the elements of a (sorted) that are not in b (sorted).
func missing(a, b []string) []string {
	var out []string
	for _, p := range a {
		if _, found := slices.BinarySearch(b, p); !found {
			out = append(out, p)
		}
	}
	return out
}

// Deny fails t if got holds a package that is, or is inside, one of denied
// (an import path prefix: a module, or a package and those below it), naming
// per denied prefix the packages it caught. why says in a few words why the
// binary must never link them; dir is the binary's folder, for the hint of
// how to find who imports them.
func Deny(t testing.TB, got []string, dir, why string, denied ...string) {
	t.Helper()
	var msg strings.Builder
	for _, d := range denied {
		var hits []string
		for _, p := range got {
			if p == d || strings.HasPrefix(p, d+"/") {
				hits = append(hits, p)
			}
		}
		switch {
		case len(hits) > 3:
			fmt.Fprintf(&msg, "  %s: %s and %d more\n", d, strings.Join(hits[:3], ", "), len(hits)-3)
		case len(hits) > 0:
			fmt.Fprintf(&msg, "  %s: %s\n", d, strings.Join(hits, ", "))
		}
	}
	if msg.Len() == 0 {
		return
	}
	t.Errorf("links what it must never link (%s), whatever deps.txt says:\n%s"+
		"who imports them: go list -deps -f '{{.ImportPath}}: {{join .Imports \" \"}}' %s | grep PREFIX",
		why, msg.String(), dir)
}
