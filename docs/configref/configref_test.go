package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReferenceUpToDate: docs/CONFIG.md is what the binaries' help says
// now. A flag added, removed or changed (its default, its text) without
// regenerating the reference fails here.
func TestReferenceUpToDate(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	got, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "docs", "CONFIG.md")
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: generate it with make config-reference", err)
	}
	if string(got) == string(want) {
		checkEnvironment(t, root, string(got))
		return
	}
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			t.Fatalf("docs/CONFIG.md differs from the binaries' flags at line %d:\n  file:     %q\n  binaries: %q\nregenerate it: make config-reference", i+1, wl, gl)
		}
	}
}

// envLiteralRE finds the environment variables a binary's source names:
// ours (FIELDPASS_*) and the few of the platform the binaries read.
var envLiteralRE = regexp.MustCompile(`"(FIELDPASS_[A-Z0-9_]+|STATE_DIRECTORY|XDG_CONFIG_HOME|SSL_CERT_FILE|HOME|USER|LOGNAME)"`)

// checkEnvironment: every variable a binary's source names is in its
// Environment table; one read in code but named in no help must be
// described in configref's binaries table.
func checkEnvironment(t *testing.T, root, doc string) {
	t.Helper()
	sections := map[string]string{}
	for _, part := range strings.Split(doc, "\n## ")[1:] {
		name, body, _ := strings.Cut(part, "\n")
		sections[name] = body
	}
	for _, b := range binaries {
		files, err := filepath.Glob(filepath.Join(root, "cmd", b.name, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no source in cmd/%s: %v", b.name, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range envLiteralRE.FindAllStringSubmatch(string(src), -1) {
				if !strings.Contains(sections[b.name], "| `"+m[1]+"` |") {
					t.Errorf("%s reads %s (%s), which its help names nowhere and docs/configref does not describe: say what it is for in its -h text, or in the env of %s in docs/configref/main.go",
						b.name, m[1], filepath.Base(f), b.name)
				}
			}
		}
	}
}
