// Package packaging makes Fieldpass's .deb, .rpm and OpenWrt .ipk packages
// with nfpm, from the files an operator installing by hand would use: the
// systemd units of deploy/systemd, the examples of deploy/examples, and
// the install scripts and OpenWrt init script of deploy/packaging.
//
// The units name /usr/local/bin, where a person installs a binary by hand;
// a package owns /usr/bin, so that one path is rewritten, and nothing else.
package packaging

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	"github.com/goreleaser/nfpm/v2/ipk"
	"github.com/goreleaser/nfpm/v2/rpm"

	"github.com/fieldpass/fieldpass"
)

// A Package is one file to make.
type Package struct {
	Program  string // fieldpass-broker or fieldpass-connector
	Format   string // deb, rpm or ipk
	Platform fieldpass.Platform
}

// File is the package's file name, as the install lines fetch it.
func (p Package) File(version string) string {
	switch p.Format {
	case "deb":
		return fieldpass.DebFile(p.Program, version, p.Platform)
	case "rpm":
		return fieldpass.RPMFile(p.Program, version, p.Platform)
	default:
		return fieldpass.IPKFile(p.Program, version, p.Platform)
	}
}

// All is every package of a release: .deb and .rpm of both programs on
// the platforms that have those architectures, and the connector's .ipk.
func All() []Package {
	var out []Package
	for prog, plats := range map[string][]fieldpass.Platform{
		"fieldpass-broker":    fieldpass.BrokerPlatforms(),
		"fieldpass-connector": fieldpass.ConnectorPlatforms(),
	} {
		for _, p := range plats {
			if p.Deb != "" {
				out = append(out, Package{prog, "deb", p})
			}
			if p.RPM != "" {
				out = append(out, Package{prog, "rpm", p})
			}
			if p.IPK {
				out = append(out, Package{prog, "ipk", p})
			}
		}
	}
	return out
}

// Config is what every package of a release shares.
type Config struct {
	Repo    string    // the repository's root: deploy/ is read from it
	Version string    // the release, as fieldpass.Version says it (v1.2.3)
	MTime   time.Time // every file's time, and the package's (SOURCE_DATE_EPOCH)
}

const homepage = "https://github.com/fieldpass/fieldpass"

var descriptions = map[string]string{
	"fieldpass-broker": "Fieldpass broker: remote access to field devices over WireGuard\n" +
		"The hub devices dial out to, the API, the portal and the session records (PostgreSQL).",
	"fieldpass-connector": "Fieldpass connector: lets a field device be reached without opening a port\n" +
		"Dials out to the broker over userspace WireGuard and serves only the local services it lists.",
}

// Make writes pkg, with binary as its program, into dir and returns the
// file's path.
func Make(c Config, pkg Package, binary, dir string) (string, error) {
	info, err := c.info(pkg, binary, dir)
	if err != nil {
		return "", err
	}
	packager := map[string]nfpm.Packager{"deb": deb.Default, "rpm": rpm.DefaultRPM, "ipk": ipk.Default}[pkg.Format]
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, pkg.Format); err != nil {
		return "", fmt.Errorf("%s: %w", pkg.File(c.Version), err)
	}
	out := filepath.Join(dir, pkg.File(c.Version))
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	if err := packager.Package(info, f); err != nil {
		f.Close()
		os.Remove(out)
		return "", fmt.Errorf("%s: %w", filepath.Base(out), err)
	}
	return out, f.Close()
}

func (c Config) info(pkg Package, binary, dir string) (*nfpm.Info, error) {
	deploy := filepath.Join(c.Repo, "deploy")
	short := strings.TrimPrefix(pkg.Program, "fieldpass-") // broker, connector
	// Generated sources (the unit with /usr/bin, the scripts with the
	// program's name) go beside the packages, in a directory of their own.
	gen := filepath.Join(dir, ".build", pkg.Program)
	if err := os.MkdirAll(gen, 0o755); err != nil {
		return nil, err
	}
	write := func(name, src string, edit func(string) string) (string, error) {
		b, err := os.ReadFile(src)
		if err != nil {
			return "", err
		}
		out := filepath.Join(gen, name)
		return out, os.WriteFile(out, []byte(edit(string(b))), 0o644)
	}
	named := func(s string) string { return strings.ReplaceAll(s, "@NAME@", pkg.Program) }
	fi := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: c.MTime}
	}
	contents := files.Contents{
		{Source: binary, Destination: "/usr/bin/" + pkg.Program, FileInfo: fi(0o755)},
		{Destination: "/etc/fieldpass", Type: files.TypeDir, FileInfo: fi(0o755)},
	}
	info := &nfpm.Info{
		Name:          pkg.Program,
		Version:       fieldpass.PackageVersion(c.Version),
		VersionSchema: "none",
		Maintainer:    "Fieldpass <fieldpass@users.noreply.github.com>",
		Description:   descriptions[pkg.Program],
		Homepage:      homepage,
		Section:       "net",
		Priority:      "optional",
		MTime:         c.MTime,
		Overridables:  nfpm.Overridables{Umask: 0o022},
	}
	info.Arch = pkg.Platform.GOARCH
	switch pkg.Format {
	case "deb":
		info.Deb.Arch = pkg.Platform.Deb
	case "rpm":
		info.RPM.Arch, info.Release = pkg.Platform.RPM, "1"
		info.RPM.Group = "Applications/Internet"
	case "ipk":
		info.IPK.Arch = "all" // see fieldpass.IPKFile
	}

	if pkg.Format == "ipk" {
		// OpenWrt: procd instead of systemd, state under /etc.
		ow := filepath.Join(deploy, "packaging", "openwrt")
		contents = append(contents,
			&files.Content{Source: filepath.Join(ow, "fieldpass-connector.init"), Destination: "/etc/init.d/fieldpass-connector", FileInfo: fi(0o755)},
			&files.Content{Source: filepath.Join(ow, "keep.d"), Destination: "/lib/upgrade/keep.d/fieldpass-connector", FileInfo: fi(0o644)},
			&files.Content{Source: filepath.Join(deploy, "examples", "connector.conf"), Destination: "/etc/fieldpass/connector.conf", Type: files.TypeConfig, FileInfo: fi(0o644)},
		)
		info.Scripts = nfpm.Scripts{PostInstall: filepath.Join(ow, "postinst"), PreRemove: filepath.Join(ow, "prerm")}
		info.Contents = contents
		return info, nil
	}

	unit, err := write(pkg.Program+".service", filepath.Join(deploy, "systemd", pkg.Program+".service"),
		func(s string) string { return strings.ReplaceAll(s, "/usr/local/bin/", "/usr/bin/") })
	if err != nil {
		return nil, err
	}
	contents = append(contents, &files.Content{Source: unit, Destination: "/usr/lib/systemd/system/" + pkg.Program + ".service", FileInfo: fi(0o644)})
	switch short {
	case "broker":
		// The database passwords: readable by root only (systemd reads
		// EnvironmentFile as root).
		contents = append(contents, &files.Content{Source: filepath.Join(deploy, "examples", "broker.env"), Destination: "/etc/fieldpass/broker.env",
			Type: files.TypeConfigNoReplace, FileInfo: fi(0o600)})
	case "connector":
		// Read by the service's dynamic user: no secret in it.
		contents = append(contents, &files.Content{Source: filepath.Join(deploy, "examples", "connector.conf"), Destination: "/etc/fieldpass/connector.conf",
			Type: files.TypeConfigNoReplace, FileInfo: fi(0o644)})
	}
	var scripts [3]string
	for i, name := range []string{"postinstall.sh", "preremove.sh", "postremove.sh"} {
		if scripts[i], err = write(name, filepath.Join(deploy, "packaging", name), named); err != nil {
			return nil, err
		}
	}
	info.Scripts = nfpm.Scripts{PostInstall: scripts[0], PreRemove: scripts[1], PostRemove: scripts[2]}
	info.Contents = contents
	return info, nil
}
