package fieldpass_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestWireguardForkIsUpstreamPlusPatch keeps third_party/wireguard-go
// honest: it must be the upstream module go.mod requires, byte for byte,
// with third_party/wireguard-go.patch applied and nothing else. Updating
// wireguard-go: third_party/README.md.
func TestWireguardForkIsUpstreamPlusPatch(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads the upstream module")
	}
	const path = "golang.zx2c4.com/wireguard"
	var mod struct {
		Require []struct{ Path, Version string }
		Replace []struct {
			Old, New struct{ Path, Version string }
		}
	}
	out, err := exec.Command("go", "mod", "edit", "-json").Output()
	if err != nil {
		t.Fatalf("go mod edit -json: %v", err)
	}
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatal(err)
	}
	var version, fork string
	for _, r := range mod.Require {
		if r.Path == path {
			version = r.Version
		}
	}
	for _, r := range mod.Replace {
		if r.Old.Path == path {
			fork = r.New.Path
		}
	}
	if version == "" || fork != "./third_party/wireguard-go" {
		t.Fatalf("go.mod requires %s at %q and replaces it with %q; want a version and ./third_party/wireguard-go", path, version, fork)
	}

	// The upstream module, through the module proxy, into a cache of the
	// test's own so that its files are writable.
	cache := t.TempDir()
	dl := exec.Command("go", "mod", "download", "-json", path+"@"+version)
	dl.Env = append(os.Environ(), "GOMODCACHE="+cache, "GOFLAGS=-modcacherw")
	out, err = dl.Output()
	if err != nil {
		t.Fatalf("go mod download %s@%s: %v", path, version, err)
	}
	var got struct{ Dir, Error string }
	if err := json.Unmarshal(out, &got); err != nil || got.Dir == "" {
		t.Fatalf("go mod download %s@%s: %s %v", path, version, got.Error, err)
	}
	patch, err := filepath.Abs("third_party/wireguard-go.patch")
	if err != nil {
		t.Fatal(err)
	}
	apply := exec.Command("git", "apply", "-p1", patch)
	apply.Dir = got.Dir
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("git apply %s to upstream %s: %v\n%s", patch, version, err, out)
	}

	want, have := tree(t, got.Dir), tree(t, "third_party/wireguard-go")
	for name, b := range want {
		h, ok := have[name]
		switch {
		case !ok:
			t.Errorf("third_party/wireguard-go lacks %s", name)
		case !bytes.Equal(h, b):
			t.Errorf("third_party/wireguard-go/%s differs from upstream %s with the patch applied", name, version)
		}
	}
	for name := range have {
		if _, ok := want[name]; !ok {
			t.Errorf("third_party/wireguard-go/%s is not upstream's, nor made by the patch", name)
		}
	}
}

// tree reads every regular file under dir, by slash-separated path.
func tree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
