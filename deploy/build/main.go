// Command build makes Fieldpass's release artefacts without a container
// engine or packaging tools: OCI images (make images) and .deb, .rpm and
// .ipk packages (make packages). It is a module of its own so that the
// image and packaging libraries stay out of the server's go.mod.
//
//	go run . images   -repo ../.. -version v1.2.3 -o ../../dist/images
//	go run . packages -repo ../.. -version v1.2.3 -o ../../dist
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/deploy/build/gobuild"
	"github.com/fieldpass/fieldpass/deploy/build/ociimage"
	"github.com/fieldpass/fieldpass/deploy/build/packaging"
)

const usage = `Usage: go run . images|packages [flags]

  images     OCI image layouts of fieldpass-broker and fieldpass-connector,
             one multi-platform index each, in DIR/<program>
  packages   .deb and .rpm of both programs, .ipk of the connector, the
             connector's plain binaries and SHA256SUMS, in DIR

Flags:`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, usage); fs.PrintDefaults() }
	repo := fs.String("repo", "../..", "the repository's root `dir`")
	version := fs.String("version", "dev", "the release (stamped into the binaries, labels and package versions)")
	out := fs.String("o", "", "output `dir` (default: <repo>/dist, images in <repo>/dist/images)")
	source := fs.String("source", "https://github.com/fieldpass/fieldpass", "the repository's `URL`, for the image labels")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs.Usage()
		return errors.New("say images or packages")
	}
	what := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	root, err := filepath.Abs(*repo)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "fieldpass-broker")); err != nil {
		return fmt.Errorf("-repo %s is not the Fieldpass repository: %w", *repo, err)
	}
	created, err := buildTime(root, getenv)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "fieldpass-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	binary := func(program string, p fieldpass.Platform) (string, error) {
		path := filepath.Join(tmp, fieldpass.BinaryFile(program, p))
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		fmt.Fprintf(stderr, "go build %s for %s\n", program, p.Name)
		return path, gobuild.Build(ctx, root, program, *version, p, path)
	}
	switch what {
	case "images":
		dir := *out
		if dir == "" {
			dir = filepath.Join(root, "dist", "images")
		}
		return images(stdout, binary, root, dir, *version, *source, created)
	case "packages":
		dir := *out
		if dir == "" {
			dir = filepath.Join(root, "dist")
		}
		return packages(stdout, binary, root, dir, *version, created)
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q: say images or packages", what)
	}
}

// buildTime is the time every file and image says it was made:
// SOURCE_DATE_EPOCH when set (reproducible-builds.org), else the commit's.
func buildTime(repo string, getenv func(string) string) (time.Time, error) {
	s := getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		b, err := exec.Command("git", "-C", repo, "log", "-1", "--format=%ct").Output()
		if err != nil {
			return time.Unix(0, 0).UTC(), nil // not a git checkout: the epoch, still reproducible
		}
		s = strings.TrimSpace(string(b))
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}

func revision(repo string) string {
	b, err := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ImagePlatforms are the platforms each image is built for.
var imagePlatforms = map[string][]string{
	"fieldpass-broker":    {"amd64", "arm64"},
	"fieldpass-connector": {"amd64", "arm64", "armv7"},
}

func images(stdout io.Writer, binary func(string, fieldpass.Platform) (string, error), repo, dir, version, source string, created time.Time) error {
	configs := []ociimage.Config{
		{Program: "fieldpass-broker", Description: "Fieldpass broker: WireGuard hub, API and portal",
			Cmd:      []string{"serve", "--http-listen=:8080", "--wg-listen=:51820", "--key-file=/var/lib/fieldpass-broker/broker.key"},
			StateDir: "/var/lib/fieldpass-broker", Ports: []string{"8080/tcp", "51820/udp"}},
		{Program: "fieldpass-connector", Description: "Fieldpass connector: reach a device without opening a port",
			Cmd:      []string{"run", "--config=/etc/fieldpass/connector.conf", "--state-dir=/var/lib/fieldpass-connector"},
			StateDir: "/var/lib/fieldpass-connector"},
	}
	all := map[string]fieldpass.Platform{}
	for _, p := range append(fieldpass.BrokerPlatforms(), fieldpass.ConnectorPlatforms()...) {
		all[p.Name] = p
	}
	for _, c := range configs {
		c.Version, c.Source, c.Revision, c.Created = version, source, revision(repo), created
		c.Binaries = map[fieldpass.Platform]string{}
		for _, name := range imagePlatforms[c.Program] {
			path, err := binary(c.Program, all[name])
			if err != nil {
				return err
			}
			c.Binaries[all[name]] = path
		}
		idx, err := ociimage.Build(c)
		if err != nil {
			return err
		}
		out := filepath.Join(dir, c.Program)
		if err := ociimage.WriteLayout(out, idx, version); err != nil {
			return fmt.Errorf("write %s: %w", out, err)
		}
		d, err := idx.Digest()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\t%s (%s)\t%s\n", out, d, strings.Join(imagePlatforms[c.Program], ", "), version)
		tars, err := ociimage.WriteArchives(dir, c.Program, dockerTag(version), idx)
		if err != nil {
			return err
		}
		for _, t := range tars {
			fmt.Fprintf(stdout, "%s\tdocker load -i %s\n", t, t)
		}
	}
	return nil
}

// dockerTag is version as an image tag may spell it.
func dockerTag(version string) string {
	t := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, version)
	if t == "" || t[0] == '.' || t[0] == '-' {
		t = "v" + t
	}
	return t
}

func packages(stdout io.Writer, binary func(string, fieldpass.Platform) (string, error), repo, dir, version string, created time.Time) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Join(dir, ".build"))
	cfg := packaging.Config{Repo: repo, Version: version, MTime: created}
	var made []string
	for _, pkg := range packaging.All() {
		bin, err := binary(pkg.Program, pkg.Platform)
		if err != nil {
			return err
		}
		path, err := packaging.Make(cfg, pkg, bin, dir)
		if err != nil {
			return err
		}
		made = append(made, path)
	}
	// The connector's plain binaries, for devices with no package manager.
	for _, p := range fieldpass.ConnectorPlatforms() {
		bin, err := binary("fieldpass-connector", p)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, fieldpass.BinaryFile("fieldpass-connector", p))
		if err := copyFile(bin, path, 0o755); err != nil {
			return err
		}
		made = append(made, path)
	}
	sort.Strings(made)
	for _, path := range made {
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\t%.1f MiB\n", path, float64(st.Size())/(1<<20))
	}
	return writeChecksums(dir)
}

// writeChecksums lists every file of dir in its SHA256SUMS, as sha256sum
// writes them: what make packages made and whatever else the release holds
// (make dist's broker binary).
func writeChecksums(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var sums strings.Builder
	for _, e := range entries { // sorted by name
		if !e.Type().IsRegular() || e.Name() == fieldpass.ChecksumsFile || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		h := sha256.Sum256(b)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(h[:]), e.Name())
	}
	return os.WriteFile(filepath.Join(dir, fieldpass.ChecksumsFile), []byte(sums.String()), 0o644)
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}
