package fieldpass

import (
	"regexp"
	"strings"
)

// A Platform is a kind of hardware a binary is built and packaged for. Its
// Name is the one people see in file names and install lines.
type Platform struct {
	Name   string // amd64, arm64, armv7, armv5, mips, mipsle
	GOARCH string
	GOARM  string // arm only: 5 (no FPU needed) or 7
	GOMIPS string // mips only: softfloat, as router CPUs mostly lack an FPU
	Deb    string // the Debian architecture; "" when no .deb is made
	RPM    string // the RPM architecture; "" when no .rpm is made
	IPK    bool   // an OpenWrt .ipk is made
}

// ConnectorPlatforms are the platforms the connector is released for: the
// field hardware of routers and gateways, and ordinary servers.
func ConnectorPlatforms() []Platform {
	return []Platform{
		{Name: "amd64", GOARCH: "amd64", Deb: "amd64", RPM: "x86_64", IPK: true},
		{Name: "arm64", GOARCH: "arm64", Deb: "arm64", RPM: "aarch64", IPK: true},
		{Name: "armv7", GOARCH: "arm", GOARM: "7", Deb: "armhf", IPK: true},
		{Name: "armv5", GOARCH: "arm", GOARM: "5", Deb: "armel", IPK: true},
		{Name: "mips", GOARCH: "mips", GOMIPS: "softfloat", IPK: true},
		{Name: "mipsle", GOARCH: "mipsle", GOMIPS: "softfloat", IPK: true},
	}
}

// BrokerPlatforms are the platforms the broker is released for (servers).
func BrokerPlatforms() []Platform {
	return []Platform{
		{Name: "amd64", GOARCH: "amd64", Deb: "amd64", RPM: "x86_64"},
		{Name: "arm64", GOARCH: "arm64", Deb: "arm64", RPM: "aarch64"},
	}
}

var (
	describeSuffix = regexp.MustCompile(`-([0-9]+)-g([0-9a-f]+)$`)
	releasePrefix  = regexp.MustCompile(`^[0-9]+\.[0-9]+`)
)

// PackageVersion is version (a tag such as v1.2.3, or what git describe
// says of a build between tags) as Debian, RPM and opkg all accept it and
// order it: no leading v; a build after a tag sorts after it
// (1.2.3+4.gabc123), a pre-release before its release (1.2.3~rc1), and a
// build with no tag before every release (0.0.0~dev).
func PackageVersion(version string) string {
	v := strings.TrimPrefix(version, "v")
	var meta []string
	if s, ok := strings.CutSuffix(v, "-dirty"); ok {
		v, meta = s, []string{"dirty"}
	}
	if m := describeSuffix.FindStringSubmatch(v); m != nil {
		v = strings.TrimSuffix(v, m[0])
		meta = append([]string{m[1], "g" + m[2]}, meta...)
	}
	if !releasePrefix.MatchString(v) { // a commit hash, "dev"
		v = "0.0.0~" + v
	}
	v = strings.ReplaceAll(v, "-", "~")
	if len(meta) > 0 {
		v += "+" + strings.Join(meta, ".")
	}
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || strings.ContainsRune(".+~", r) {
			return r
		}
		return '.'
	}, v)
}

// The release's file names. The packager writes these and the install
// lines fetch them, so they are made in one place.

// BinaryFile is the plain binary of program for p.
func BinaryFile(program string, p Platform) string { return program + "-linux-" + p.Name }

// DebFile is the .deb of program for p.Deb.
func DebFile(program, version string, p Platform) string {
	return program + "_" + PackageVersion(version) + "_" + p.Deb + ".deb"
}

// RPMFile is the .rpm of program for p.RPM (release 1).
func RPMFile(program, version string, p Platform) string {
	return program + "-" + PackageVersion(version) + "-1." + p.RPM + ".rpm"
}

// IPKFile is the OpenWrt package of program for p. OpenWrt names CPUs
// more finely than Go builds for (mipsel_24kc, arm_cortex-a7...), so the
// file is named after p and the package says "all": the person picks the
// file for the device's CPU family, and its install script checks that the
// binary runs.
func IPKFile(program, version string, p Platform) string {
	return program + "_" + PackageVersion(version) + "_" + p.Name + ".ipk"
}

// ChecksumsFile lists the SHA-256 of every file of a release, as
// sha256sum writes it.
const ChecksumsFile = "SHA256SUMS"

// DownloadURL is where the release of version is published, unless an
// operator mirrors it elsewhere.
func DownloadURL(version string) string {
	return "https://github.com/fieldpass/fieldpass/releases/download/" + version
}

// An InstallLine installs the connector on one kind of device with one
// command.
type InstallLine struct {
	Target  string // e.g. "Debian, Ubuntu", "OpenWrt mipsle"
	Command string
}

// ConnectorInstallLines are the one-line installs of the connector of
// version, fetched from base (DownloadURL when empty): a .deb or an .rpm
// for the machine's own architecture, an .ipk per OpenWrt CPU family, and
// the plain binary per platform, checked against the release's checksums.
func ConnectorInstallLines(base, version string) []InstallLine {
	if base == "" {
		base = DownloadURL(version)
	}
	base = strings.TrimSuffix(base, "/") + "/"
	const prog = "fieldpass-connector"
	var debs, rpms []string
	for _, p := range ConnectorPlatforms() {
		if p.Deb != "" {
			debs = append(debs, p.Deb)
		}
		if p.RPM != "" {
			rpms = append(rpms, p.RPM)
		}
	}
	deb := DebFile(prog, version, Platform{Deb: "$(dpkg --print-architecture)"})
	rpm := RPMFile(prog, version, Platform{RPM: "$(uname -m)"})
	lines := []InstallLine{
		{"Debian, Ubuntu (" + strings.Join(debs, ", ") + ")",
			`curl -fsSLo /tmp/` + prog + `.deb "` + base + deb + `" && sudo dpkg -i /tmp/` + prog + `.deb`},
		{"Fedora, RHEL (" + strings.Join(rpms, ", ") + ")",
			`sudo dnf install -y "` + base + rpm + `"`},
	}
	for _, p := range ConnectorPlatforms() {
		if p.IPK {
			lines = append(lines, InstallLine{"OpenWrt " + p.Name, "opkg install " + base + IPKFile(prog, version, p)})
		}
	}
	for _, p := range ConnectorPlatforms() {
		f := BinaryFile(prog, p)
		lines = append(lines, InstallLine{"Linux binary " + p.Name,
			"curl -fsSLO " + base + f + " && curl -fsSL " + base + ChecksumsFile + " | grep ' " + f + "$' | sha256sum -c" +
				" && sudo install -m 0755 " + f + " /usr/local/bin/" + prog})
	}
	return lines
}
