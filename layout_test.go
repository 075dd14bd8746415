package fieldpass_test

import (
	"errors"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The layout's rules, checked on the build graph: the adapters meet in the
// domain, not in each other. A type two adapters share belongs in the root
// package, which in turn depends on nothing but the standard library.

const module = "github.com/fieldpass/fieldpass"

func TestDomainImportsOnlyStandardLibrary(t *testing.T) {
	d := deps(t, ".")
	for _, pkg := range slices.Sorted(maps.Keys(d)) {
		if pkg != module {
			t.Errorf("package fieldpass depends on %s (imported by %s): the domain may import only the standard library",
				pkg, strings.Join(d[pkg], ", "))
		}
	}
}

func TestStoreImportsNoAdapter(t *testing.T) {
	// What the store may use of ours: the domain, and the schema it applies.
	allowed := []string{module, module + "/postgres", module + "/migrations"}
	d := deps(t, "./postgres")
	for _, pkg := range slices.Sorted(maps.Keys(d)) {
		if strings.HasPrefix(pkg, module+"/") && !slices.Contains(allowed, pkg) {
			t.Errorf("package postgres depends on %s (imported by %s): move what it needs from there into the root package",
				pkg, strings.Join(d[pkg], ", "))
		}
	}
}

// deps returns the packages outside the standard library that pattern
// builds on (itself included, tests excluded), each with those of them
// that import it directly.
func deps(t *testing.T, pattern string) map[string][]string {
	t.Helper()
	// go test puts its own go first on PATH.
	out, err := exec.Command("go", "list", "-deps",
		"-f", `{{if not .Standard}}{{.ImportPath}}{{range .Imports}} {{.}}{{end}}{{end}}`, pattern).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list -deps %s: %v\n%s", pattern, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pattern, err)
	}
	var lines [][]string
	importers := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			lines = append(lines, f)
			importers[f[0]] = nil
		}
	}
	for _, f := range lines {
		for _, imp := range f[1:] {
			if _, ok := importers[imp]; ok { // not the standard library
				importers[imp] = append(importers[imp], f[0])
			}
		}
	}
	return importers
}
