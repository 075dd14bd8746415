// Package ociimage builds Fieldpass's container images without a container
// engine: one layer holding the static binary, the CA roots, a user table
// with the unprivileged user, and the state directory that user owns; no
// shell, no package manager, nothing else. The same binaries, version and
// time give the same digests, on any machine (tar entries in a fixed order
// with fixed owners and times, gzip without a timestamp, the CA roots from a
// pinned Go module rather than the build host).
package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"

	"github.com/fieldpass/fieldpass"
)

// UID and GID run the program: not root, and the same number distroless
// images call nonroot, so volumes prepared for those fit these.
const UID, GID = 65532, 65532

// CABundle is where the image keeps the CA roots; Go's crypto/x509 looks
// there first on Linux.
const CABundle = "etc/ssl/certs/ca-certificates.crt"

// Config describes one program's image.
type Config struct {
	Program     string // fieldpass-broker: the binary at /usr/local/bin/<Program>, the entrypoint
	Description string
	Version     string // the release (org.opencontainers.image.version)
	Source      string // the repository's URL (org.opencontainers.image.source)
	Revision    string // the commit (org.opencontainers.image.revision); may be empty
	Created     time.Time
	// Binaries maps each platform to its built binary.
	Binaries map[fieldpass.Platform]string
	Cmd      []string // default arguments
	StateDir string   // an absolute directory the user owns, mode 0700; "" for none
	Ports    []string // exposed, "8080/tcp"
}

// Labels are the image's OCI labels, also set as annotations on the index.
func (c Config) Labels() map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       c.Program,
		"org.opencontainers.image.description": c.Description,
		"org.opencontainers.image.version":     c.Version,
		"org.opencontainers.image.source":      c.Source,
		"org.opencontainers.image.created":     c.Created.UTC().Format(time.RFC3339),
	}
	if c.Revision != "" {
		l["org.opencontainers.image.revision"] = c.Revision
	}
	return l
}

// Build makes the multi-platform index of c's images.
func Build(c Config) (v1.ImageIndex, error) {
	if len(c.Binaries) == 0 {
		return nil, fmt.Errorf("image %s: no binaries", c.Program)
	}
	plats := make([]fieldpass.Platform, 0, len(c.Binaries))
	for p := range c.Binaries {
		plats = append(plats, p)
	}
	sort.Slice(plats, func(i, j int) bool { return plats[i].Name < plats[j].Name })
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, p := range plats {
		img, err := c.image(p, c.Binaries[p])
		if err != nil {
			return nil, fmt.Errorf("image %s for %s: %w", c.Program, p.Name, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: cf.Platform()}})
	}
	return mutate.Annotations(idx, c.Labels()).(v1.ImageIndex), nil
}

// Platform is p as OCI names it.
func Platform(p fieldpass.Platform) v1.Platform {
	v := v1.Platform{OS: "linux", Architecture: p.GOARCH}
	switch {
	case p.GOARCH == "arm":
		v.Variant = "v" + p.GOARM
	case p.GOARCH == "arm64":
		v.Variant = "v8"
	}
	return v
}

func (c Config) image(p fieldpass.Platform, binary string) (v1.Image, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	files, err := c.rootFS(bin)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(files)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	plat := Platform(p)
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	cf.Created = v1.Time{Time: c.Created.UTC()}
	cf.History = []v1.History{{Created: cf.Created, CreatedBy: "fieldpass deploy/build images", Comment: "static binary, CA roots, user table"}}
	ports := map[string]struct{}{}
	for _, port := range c.Ports {
		ports[port] = struct{}{}
	}
	cf.Config = v1.Config{
		User:         fmt.Sprintf("%d:%d", UID, GID),
		Entrypoint:   []string{"/usr/local/bin/" + c.Program},
		Cmd:          c.Cmd,
		Env:          []string{"PATH=/usr/local/bin"},
		WorkingDir:   "/",
		Labels:       c.Labels(),
		ExposedPorts: ports,
	}
	if c.StateDir != "" {
		cf.Config.WorkingDir = c.StateDir
	}
	return mutate.ConfigFile(img, cf)
}

// rootFS is the layer's tar: directories before what they hold, every
// entry owned by root unless the user must write it, every time c.Created.
func (c Config) rootFS(binary []byte) ([]byte, error) {
	type entry struct {
		name     string
		mode     int64
		uid, gid int
		data     []byte // nil: a directory
	}
	var roots bytes.Buffer
	for r := range bundle.Roots() {
		// A root with a constraint (a distrust date) cannot say so in a
		// PEM file; Debian's bundle leaves those out too.
		if r.Constraint == nil {
			pem.Encode(&roots, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate})
		}
	}
	entries := []entry{
		{name: "etc/", mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID)},
		{name: "etc/group", mode: 0o644, data: fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", GID)},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: CABundle, mode: 0o644, data: roots.Bytes()},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: UID, gid: GID},
		{name: "tmp/", mode: 0o1777},
		{name: "usr/", mode: 0o755},
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: "usr/local/bin/" + c.Program, mode: 0o755, data: binary},
	}
	if c.StateDir != "" {
		dir := strings.Trim(c.StateDir, "/")
		have := map[string]bool{}
		for _, e := range entries {
			have[e.name] = true
		}
		for parent := path.Dir(dir); parent != "."; parent = path.Dir(parent) {
			if !have[parent+"/"] {
				entries = append(entries, entry{name: parent + "/", mode: 0o755})
			}
		}
		entries = append(entries, entry{name: dir + "/", mode: 0o700, uid: UID, gid: GID})
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: c.Created.UTC().Truncate(time.Second), Format: tar.FormatPAX}
		if e.data == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteLayout writes idx as an OCI image layout in dir (emptied first),
// tagged with its version: `skopeo copy oci:DIR:VERSION docker://...` or
// `crane push DIR ...` publishes it, `podman load` reads it.
func WriteLayout(dir string, idx v1.ImageIndex, tag string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag}))
}

// WriteArchives writes each platform's image of idx as a tarball that
// `docker load` reads (the classic image store loads one platform at a
// time), tagged program:tag and program:latest, as
// dir/<program>-<platform>.tar. It returns the files written.
func WriteArchives(dir, program, tag string, idx v1.ImageIndex) ([]string, error) {
	ref, err := name.NewTag(program + ":" + tag)
	if err != nil {
		return nil, fmt.Errorf("tag %s:%s: %w", program, tag, err)
	}
	latest, err := name.NewTag(program + ":latest")
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range im.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			return nil, err
		}
		plat := m.Platform.Architecture
		if m.Platform.Architecture == "arm" {
			plat += m.Platform.Variant // armv7
		}
		path := fmt.Sprintf("%s/%s-%s.tar", dir, program, plat)
		if err := tarball.MultiRefWriteToFile(path, map[name.Reference]v1.Image{ref: img, latest: img}); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
		out = append(out, path)
	}
	return out, nil
}
