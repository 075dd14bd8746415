package ociimage_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/x509"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/deploy/build/gobuild"
	"github.com/fieldpass/fieldpass/deploy/build/ociimage"
)

var (
	amd64 = fieldpass.Platform{Name: "amd64", GOARCH: "amd64"}
	arm64 = fieldpass.Platform{Name: "arm64", GOARCH: "arm64"}
)

func mustBuild(t *testing.T, program string, p fieldpass.Platform) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), fieldpass.BinaryFile(program, p))
	if err := gobuild.Build(context.Background(), "../../..", program, "v1.2.3", p, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestImage builds the connector's image for two platforms as make images
// does, writes it as an OCI layout, reads it back the way a registry client
// would, checks what a runtime would run, and runs the binary taken out of
// its layer.
func TestImage(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("runs the linux/amd64 binary from the image")
	}
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cfg := ociimage.Config{
		Program: "fieldpass-connector", Description: "test", Version: "v1.2.3",
		Source: "https://github.com/fieldpass/fieldpass", Revision: "0123456789abcdef0123456789abcdef01234567", Created: created,
		Binaries: map[fieldpass.Platform]string{amd64: mustBuild(t, "fieldpass-connector", amd64), arm64: mustBuild(t, "fieldpass-connector", arm64)},
		Cmd:      []string{"run", "--config=/etc/fieldpass/connector.conf"},
		StateDir: "/var/lib/fieldpass-connector",
	}
	idx, err := ociimage.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	if err := ociimage.WriteLayout(dir, idx, "v1.2.3"); err != nil {
		t.Fatal(err)
	}

	// Same inputs, same digest: nothing of the build machine or the clock
	// gets in.
	again, err := ociimage.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := idx.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("two builds of the same inputs: %s and %s", d1, d2)
	}

	// The docker load archives hold the same images, tagged.
	tars, err := ociimage.WriteArchives(t.TempDir(), "fieldpass-connector", "v1.2.3", idx)
	if err != nil || len(tars) != 2 {
		t.Fatalf("archives %v: %v", tars, err)
	}
	for _, tag := range []string{"v1.2.3", "latest"} {
		ref, _ := name.NewTag("fieldpass-connector:" + tag)
		img, err := tarball.ImageFromPath(tars[0], &ref)
		if err != nil {
			t.Fatalf("%s: %v", tars[0], err)
		}
		want, _ := idx.IndexManifest()
		if got, _ := img.ConfigName(); got != configName(t, idx, want.Manifests[0].Digest) {
			t.Errorf("%s %s: config %s, not the index's first image's", tars[0], tag, got)
		}
	}

	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3" || tm.Manifests[0].Digest != d1 {
		t.Fatalf("index.json: %+v, want one index %s tagged v1.2.3", tm.Manifests, d1)
	}
	read, err := top.ImageIndex(d1)
	if err != nil {
		t.Fatal(err)
	}
	im, err := read.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex || im.Annotations["org.opencontainers.image.version"] != "v1.2.3" {
		t.Errorf("index: media type %s, annotations %v", im.MediaType, im.Annotations)
	}
	var platforms []string
	for _, m := range im.Manifests {
		platforms = append(platforms, m.Platform.String())
	}
	if strings.Join(platforms, " ") != "linux/amd64 linux/arm64/v8" {
		t.Errorf("platforms %v, want linux/amd64 and linux/arm64/v8", platforms)
	}

	for _, m := range im.Manifests {
		t.Run(m.Platform.Architecture, func(t *testing.T) {
			img, err := read.Image(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			c := cf.Config
			if c.User != "65532:65532" {
				t.Errorf("user %q, want the numeric non-root 65532:65532", c.User)
			}
			if strings.Join(c.Entrypoint, " ") != "/usr/local/bin/fieldpass-connector" || strings.Join(c.Cmd, " ") != strings.Join(cfg.Cmd, " ") {
				t.Errorf("entrypoint %v cmd %v", c.Entrypoint, c.Cmd)
			}
			for k, v := range map[string]string{
				"org.opencontainers.image.version":  "v1.2.3",
				"org.opencontainers.image.source":   cfg.Source,
				"org.opencontainers.image.revision": cfg.Revision,
			} {
				if c.Labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
				}
			}
			if !cf.Created.Time.Equal(created) || cf.Architecture != m.Platform.Architecture || cf.OS != "linux" {
				t.Errorf("config: created %v, platform %s/%s", cf.Created, cf.OS, cf.Architecture)
			}
			layers, err := img.Layers()
			if err != nil || len(layers) != 1 {
				t.Fatalf("%d layers (%v), want one", len(layers), err)
			}
			if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
				t.Errorf("layer media type %s", mt)
			}
			files := readLayer(t, layers[0], created)
			checkFile(t, files, "usr/local/bin/fieldpass-connector", 0o755, 0)
			checkFile(t, files, "var/lib/fieldpass-connector/", 0o700, ociimage.UID)
			checkFile(t, files, "tmp/", 0o1777, 0)
			checkFile(t, files, ociimage.CABundle, 0o644, 0)
			checkFile(t, files, "etc/passwd", 0o644, 0)
			for name, f := range files {
				switch base := filepath.Base(name); base {
				case "sh", "bash", "ash", "dash", "busybox", "toybox":
					t.Errorf("the image holds a shell: %s", name)
				}
				if f.mode&0o6000 != 0 {
					t.Errorf("%s is setuid or setgid", name)
				}
			}
			if !strings.Contains(string(files["etc/passwd"].data), "nonroot:x:65532:65532:") {
				t.Errorf("/etc/passwd names no user 65532:\n%s", files["etc/passwd"].data)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(files[ociimage.CABundle].data) || strings.Count(string(files[ociimage.CABundle].data), "BEGIN CERTIFICATE") < 100 {
				t.Error("the CA bundle holds fewer than 100 roots")
			}

			// Static: no program interpreter (dynamic loader) to find.
			ef, err := elf.NewFile(bytes.NewReader(files["usr/local/bin/fieldpass-connector"].data))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ef.Progs {
				if p.Type == elf.PT_INTERP {
					t.Error("the binary is dynamically linked")
				}
			}
			if want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[m.Platform.Architecture]; ef.Machine != want {
				t.Errorf("the %s image holds a %v binary", m.Platform.Architecture, ef.Machine)
			}

			if m.Platform.Architecture != "amd64" {
				return
			}
			// The binary taken out of the image runs and says its version.
			bin := filepath.Join(t.TempDir(), "fieldpass-connector")
			if err := os.WriteFile(bin, files["usr/local/bin/fieldpass-connector"].data, 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "version").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "v1.2.3") {
				t.Errorf("%s version: %v\n%s", bin, err, out)
			}
			out, _ = exec.Command(bin, "run", "-h").CombinedOutput()
			if !strings.Contains(string(out), "-state-dir") {
				t.Errorf("run -h lists no --state-dir:\n%s", out)
			}
		})
	}
}

type file struct {
	mode int64
	uid  int
	data []byte
}

func readLayer(t *testing.T, l v1.Layer, created time.Time) map[string]file {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]file{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeDir {
			t.Errorf("%s: type %c, want only files and directories", h.Name, h.Typeflag)
		}
		if !h.ModTime.Equal(created) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, created)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = file{mode: h.Mode, uid: h.Uid, data: b}
	}
	return files
}

func checkFile(t *testing.T, files map[string]file, name string, mode int64, uid int) {
	t.Helper()
	f, ok := files[name]
	if !ok {
		t.Errorf("no %s in the layer", name)
		return
	}
	if f.mode != mode || f.uid != uid {
		t.Errorf("%s: mode %o uid %d, want %o and %d", name, f.mode, f.uid, mode, uid)
	}
}

func configName(t *testing.T, idx v1.ImageIndex, d v1.Hash) v1.Hash {
	t.Helper()
	img, err := idx.Image(d)
	if err != nil {
		t.Fatal(err)
	}
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
