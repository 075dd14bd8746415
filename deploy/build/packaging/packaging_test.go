package packaging_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/deploy/build/gobuild"
	"github.com/fieldpass/fieldpass/deploy/build/packaging"
)

const repo = "../../.."

var amd64 = fieldpass.Platform{Name: "amd64", GOARCH: "amd64", Deb: "amd64", RPM: "x86_64", IPK: true}

func mustMake(t *testing.T, program, format string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), program)
	if err := gobuild.Build(context.Background(), repo, program, "v1.2.3", amd64, bin); err != nil {
		t.Fatal(err)
	}
	cfg := packaging.Config{Repo: repo, Version: "v1.2.3", MTime: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	path, err := packaging.Make(cfg, packaging.Package{Program: program, Format: format, Platform: amd64}, bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func skipUnlessAmd64(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("runs the linux/amd64 binary from the package")
	}
}

// TestDeb installs each .deb into a scratch root with dpkg --root, its
// maintainer scripts included (never into this machine's /: under
// DPKG_ROOT the scripts leave the running system alone, and a systemctl
// that fails the test stands first in PATH), then checks the files, their
// modes, the conffiles and the hardened unit, runs the installed binary,
// and removes the package again.
func TestDeb(t *testing.T) {
	skipUnlessAmd64(t)
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Skip("dpkg not installed: apt-get install dpkg")
	}
	for _, tc := range []struct {
		program  string
		conffile string
		confMode fs.FileMode
	}{
		{"fieldpass-connector", "/etc/fieldpass/connector.conf", 0o644},
		{"fieldpass-broker", "/etc/fieldpass/broker.env", 0o600},
	} {
		t.Run(tc.program, func(t *testing.T) {
			t.Parallel()
			deb := mustMake(t, tc.program, "deb")
			if got, want := filepath.Base(deb), tc.program+"_1.2.3_amd64.deb"; got != want {
				t.Errorf("file %s, want %s", got, want)
			}
			root := t.TempDir()
			for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
				os.MkdirAll(filepath.Join(root, d), 0o755)
			}
			os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644)
			// Any systemctl the scripts ran would be this one.
			fake := t.TempDir()
			called := filepath.Join(fake, "called")
			os.WriteFile(filepath.Join(fake, "systemctl"), []byte("#!/bin/sh\necho \"$@\" >> "+called+"\nexit 1\n"), 0o755)
			run := func(args ...string) string {
				t.Helper()
				cmd := exec.Command(dpkg, append([]string{"--root=" + root, "--force-script-chrootless", "--force-not-root", "--log=/dev/null"}, args...)...)
				cmd.Env = append(os.Environ(), "PATH="+fake+":"+os.Getenv("PATH"))
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("dpkg %v: %v\n%s", args, err, out)
				}
				return string(out)
			}
			run("-i", deb)
			if b, err := os.ReadFile(called); err == nil {
				t.Errorf("the maintainer scripts ran systemctl under dpkg --root: %s", b)
			}
			status, _ := exec.Command("dpkg-query", "--root="+root, "-W", "-f=${Status} ${Version}", tc.program).Output()
			if string(status) != "install ok installed 1.2.3" {
				t.Errorf("dpkg-query: %q, want installed 1.2.3 (postinst succeeded)", status)
			}

			bin := filepath.Join(root, "usr/bin", tc.program)
			unit := filepath.Join(root, "usr/lib/systemd/system", tc.program+".service")
			checkMode(t, bin, 0o755)
			checkMode(t, unit, 0o644)
			checkMode(t, filepath.Join(root, tc.conffile), tc.confMode)
			checkMode(t, filepath.Join(root, "etc/fieldpass"), fs.ModeDir|0o755)
			conffiles, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/info", tc.program+".conffiles"))
			if strings.TrimSpace(string(conffiles)) != tc.conffile {
				t.Errorf("conffiles %q, want %s", conffiles, tc.conffile)
			}
			// The example is the one of deploy/examples, as shipped.
			if want, got := readFile(t, filepath.Join(repo, "deploy/examples", filepath.Base(tc.conffile))), readFile(t, filepath.Join(root, tc.conffile)); got != want {
				t.Errorf("%s differs from deploy/examples", tc.conffile)
			}

			out, err := exec.Command(bin, "version").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "v1.2.3") {
				t.Errorf("installed %s version: %v\n%s", tc.program, err, out)
			}

			// The unit is deploy/systemd's with the packaged binary's path.
			src := readFile(t, filepath.Join(repo, "deploy/systemd", tc.program+".service"))
			got := readFile(t, unit)
			if got != strings.ReplaceAll(src, "/usr/local/bin/", "/usr/bin/") || strings.Contains(got, "/usr/local/") {
				t.Errorf("the packaged unit is not deploy/systemd's with /usr/bin:\n%s", got)
			}
			checkHardening(t, tc.program, got)
			verifyUnit(t, strings.ReplaceAll(got, "/usr/bin/"+tc.program, bin), tc.program+".service")

			// Removing keeps the edited configuration, as dpkg does for a
			// conffile; purging takes it.
			run("-r", tc.program)
			if _, err := os.Stat(bin); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("after dpkg -r: %s: %v", bin, err)
			}
			if _, err := os.Stat(filepath.Join(root, tc.conffile)); err != nil {
				t.Errorf("after dpkg -r the configuration is gone: %v", err)
			}
			run("--purge", tc.program)
			if _, err := os.Stat(filepath.Join(root, tc.conffile)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("after dpkg --purge: %s: %v", tc.conffile, err)
			}
		})
	}
}

// TestRPM reads the .rpm's header as rpm would: name, version, arch, the
// files with their modes, the config files and the scripts.
func TestRPM(t *testing.T) {
	t.Parallel()
	path := mustMake(t, "fieldpass-connector", "rpm")
	if got, want := filepath.Base(path), "fieldpass-connector-1.2.3-1.x86_64.rpm"; got != want {
		t.Errorf("file %s, want %s", got, want)
	}
	h, err := readRPMHeader(path)
	if err != nil {
		t.Fatal(err)
	}
	for tag, want := range map[int]string{1000: "fieldpass-connector", 1001: "1.2.3", 1002: "1", 1022: "x86_64"} {
		if got := h.str(tag); got != want {
			t.Errorf("tag %d = %q, want %q", tag, got, want)
		}
	}
	files := h.files()
	for name, want := range map[string]struct {
		mode   fs.FileMode
		config bool
	}{
		"/usr/bin/fieldpass-connector":                        {0o755, false},
		"/usr/lib/systemd/system/fieldpass-connector.service": {0o644, false},
		"/etc/fieldpass/connector.conf":                       {0o644, true},
	} {
		f, ok := files[name]
		if !ok {
			t.Errorf("no %s in the rpm; it has %v", name, keys(files))
			continue
		}
		if f.mode.Perm() != want.mode || f.config != want.config || f.user != "root" {
			t.Errorf("%s: mode %v config %v user %q, want %v config %v root", name, f.mode.Perm(), f.config, f.user, want.mode, want.config)
		}
	}
	if post := h.str(1024); !strings.Contains(post, "systemctl daemon-reload") || !strings.Contains(post, "name=fieldpass-connector\n") {
		t.Errorf("%%post does not reload systemd for the unit:\n%s", post)
	}
	if preun := h.str(1025); !strings.Contains(preun, "disable --now") {
		t.Errorf("%%preun does not stop the service:\n%s", preun)
	}
	if out, err := exec.Command("rpm", "-qp", "--qf", "%{NAME} %{VERSION}", path).Output(); err == nil && string(out) != "fieldpass-connector 1.2.3" {
		t.Errorf("rpm -qp: %q", out)
	}
}

// TestIPK opens the OpenWrt package (a tar.gz of control.tar.gz and
// data.tar.gz): its control fields, conffiles, the procd init script and
// the scripts, all checked by sh -n, and runs the binary from it.
func TestIPK(t *testing.T) {
	skipUnlessAmd64(t)
	t.Parallel()
	path := mustMake(t, "fieldpass-connector", "ipk")
	if got, want := filepath.Base(path), "fieldpass-connector_1.2.3_amd64.ipk"; got != want {
		t.Errorf("file %s, want %s", got, want)
	}
	outer := readTarGz(t, readFile(t, path))
	if strings.TrimSpace(outer["debian-binary"].data) != "2.0" {
		t.Errorf("debian-binary %q", outer["debian-binary"].data)
	}
	control := readTarGz(t, outer["control.tar.gz"].data)
	data := readTarGz(t, outer["data.tar.gz"].data)
	ctl := control["control"].data
	for _, want := range []string{"Package: fieldpass-connector\n", "Version: 1.2.3\n", "Architecture: all\n"} {
		if !strings.Contains(ctl, want) {
			t.Errorf("control lacks %q:\n%s", want, ctl)
		}
	}
	if strings.TrimSpace(control["conffiles"].data) != "/etc/fieldpass/connector.conf" {
		t.Errorf("conffiles %q", control["conffiles"].data)
	}
	for name, mode := range map[string]int64{
		"usr/bin/fieldpass-connector":            0o755,
		"etc/init.d/fieldpass-connector":         0o755,
		"etc/fieldpass/connector.conf":           0o644,
		"lib/upgrade/keep.d/fieldpass-connector": 0o644,
	} {
		if f, ok := data[name]; !ok || f.mode != mode {
			t.Errorf("%s: mode %o (present %v), want %o", name, f.mode, ok, mode)
		}
	}
	if _, ok := data["usr/lib/systemd/system/fieldpass-connector.service"]; ok {
		t.Error("the OpenWrt package carries a systemd unit")
	}
	init := data["etc/init.d/fieldpass-connector"].data
	for _, want := range []string{"USE_PROCD=1", "procd_set_param user fieldpass", "procd_set_param no_new_privs 1", "procd_set_param respawn 3600 10 0", "--state-dir=\"$STATE\""} {
		if !strings.Contains(init, want) {
			t.Errorf("init script lacks %q", want)
		}
	}
	if !strings.Contains(data["lib/upgrade/keep.d/fieldpass-connector"].data, "/etc/fieldpass/") {
		t.Error("sysupgrade would not keep /etc/fieldpass (the enrolment)")
	}
	for name, text := range map[string]string{"init": init, "postinst": control["postinst"].data, "prerm": control["prerm"].data} {
		if text == "" {
			t.Errorf("no %s", name)
			continue
		}
		cmd := exec.Command("sh", "-n")
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", name, err, out)
		}
	}
	bin := filepath.Join(t.TempDir(), "fieldpass-connector")
	os.WriteFile(bin, []byte(data["usr/bin/fieldpass-connector"].data), 0o755)
	out, err := exec.Command(bin, "run", "-h").CombinedOutput()
	if !strings.Contains(string(out), "-state-dir") {
		t.Errorf("run -h from the ipk: %v\n%s", err, out)
	}
}

// TestInstallLines: every file the one-line installs fetch is one that
// make packages writes.
func TestInstallLines(t *testing.T) {
	made := map[string]bool{fieldpass.ChecksumsFile: true}
	for _, p := range packaging.All() {
		made[p.File("v1.2.3")] = true
	}
	for _, p := range fieldpass.ConnectorPlatforms() {
		made[fieldpass.BinaryFile("fieldpass-connector", p)] = true
	}
	const base = "https://downloads.example.com/v1.2.3/"
	var debs, rpms []string
	for _, p := range fieldpass.ConnectorPlatforms() {
		if p.Deb != "" {
			debs = append(debs, p.Deb)
		}
		if p.RPM != "" {
			rpms = append(rpms, p.RPM)
		}
	}
	fetched := 0
	for _, l := range fieldpass.ConnectorInstallLines(base, "v1.2.3") {
		cmd := strings.NewReplacer("$(dpkg --print-architecture)", "@DEB@", "$(uname -m)", "@RPM@").Replace(l.Command)
		for _, w := range strings.Fields(cmd) {
			w = strings.Trim(w, `"`)
			name, ok := strings.CutPrefix(w, base)
			if !ok {
				continue
			}
			// The machine names its own architecture.
			var names []string
			switch {
			case strings.Contains(name, "@DEB@"):
				for _, a := range debs {
					names = append(names, strings.ReplaceAll(name, "@DEB@", a))
				}
			case strings.Contains(name, "@RPM@"):
				for _, a := range rpms {
					names = append(names, strings.ReplaceAll(name, "@RPM@", a))
				}
			default:
				names = []string{name}
			}
			for _, n := range names {
				fetched++
				if !made[n] {
					t.Errorf("%s: %q fetches %s, which make packages does not write", l.Target, l.Command, n)
				}
			}
		}
	}
	if fetched < len(fieldpass.ConnectorPlatforms())*2 {
		t.Errorf("the lines fetch %d files", fetched)
	}
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if st.Mode() != want {
		t.Errorf("%s: mode %v, want %v", path, st.Mode(), want)
	}
}

// checkHardening reads the unit's [Service] settings.
func checkHardening(t *testing.T, program, unit string) {
	t.Helper()
	s := map[string]string{}
	section := ""
	for _, line := range strings.Split(strings.ReplaceAll(unit, "\\\n", " "), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
		}
		if k, v, ok := strings.Cut(line, "="); ok && section == "[Service]" && !strings.HasPrefix(line, "#") {
			s[k] = v // the last one wins, as in systemd
		}
	}
	for k, want := range map[string]string{
		"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
		"ProtectHome": "yes", "PrivateDevices": "yes",
		"CapabilityBoundingSet": "", "AmbientCapabilities": "", "UMask": "0077",
	} {
		if got, ok := s[k]; !ok || got != want {
			t.Errorf("%s.service: %s=%q (set: %v), want %q", program, k, got, ok, want)
		}
	}
	// The connector never needs a capability, so it gets a user namespace
	// of its own; the broker may be given CAP_NET_BIND_SERVICE for :443 in
	// a drop-in, which only works in the host's namespace.
	if program == "fieldpass-connector" && s["PrivateUsers"] != "yes" {
		t.Errorf("%s.service: PrivateUsers=%q, want yes", program, s["PrivateUsers"])
	}
	if !strings.HasPrefix(s["ExecStart"], "/usr/bin/") {
		t.Errorf("ExecStart=%s", s["ExecStart"])
	}
}

// verifyUnit runs systemd-analyze verify where it is installed.
func verifyUnit(t *testing.T, unit, name string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: unit not verified")
		return
	}
	path := filepath.Join(t.TempDir(), name)
	os.WriteFile(path, []byte(unit), 0o644)
	if out, err := exec.Command(sa, "verify", path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

type tarFile struct {
	mode int64
	data string
}

func readTarGz(t *testing.T, b string) map[string]tarFile {
	t.Helper()
	zr, err := gzip.NewReader(strings.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]tarFile{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		out[strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = tarFile{h.Mode, string(data)}
	}
}

// rpmHeader is the main header of an RPM file: tag -> raw value.
type rpmHeader map[int]any

type rpmFile struct {
	mode   fs.FileMode
	user   string
	config bool
}

// readRPMHeader reads the lead (96 bytes), the signature header (padded to
// 8 bytes) and the main header, as the RPM file format describes them.
func readRPMHeader(path string) (rpmHeader, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 96 || !bytes.Equal(b[:4], []byte{0xed, 0xab, 0xee, 0xdb}) {
		return nil, fmt.Errorf("%s: no RPM lead", path)
	}
	off := 96
	read := func() (rpmHeader, int, error) {
		if len(b) < off+16 || !bytes.Equal(b[off:off+3], []byte{0x8e, 0xad, 0xe8}) {
			return nil, 0, fmt.Errorf("no header at %d", off)
		}
		n := int(binary.BigEndian.Uint32(b[off+8:]))
		size := int(binary.BigEndian.Uint32(b[off+12:]))
		index := b[off+16 : off+16+16*n]
		store := b[off+16+16*n : off+16+16*n+size]
		h := rpmHeader{}
		for i := 0; i < n; i++ {
			e := index[16*i:]
			tag, typ := int(binary.BigEndian.Uint32(e)), binary.BigEndian.Uint32(e[4:])
			at, count := int(binary.BigEndian.Uint32(e[8:])), int(binary.BigEndian.Uint32(e[12:]))
			switch typ {
			case 3: // int16
				var v []int
				for j := 0; j < count; j++ {
					v = append(v, int(binary.BigEndian.Uint16(store[at+2*j:])))
				}
				h[tag] = v
			case 4: // int32
				var v []int
				for j := 0; j < count; j++ {
					v = append(v, int(binary.BigEndian.Uint32(store[at+4*j:])))
				}
				h[tag] = v
			case 6, 8, 9: // string, string array, i18n string
				var v []string
				for j := 0; j < count; j++ {
					end := bytes.IndexByte(store[at:], 0)
					v = append(v, string(store[at:at+end]))
					at += end + 1
				}
				h[tag] = v
			}
		}
		return h, 16 + 16*n + size, nil
	}
	_, n, err := read()
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	off += (n + 7) &^ 7
	h, _, err := read()
	return h, err
}

func (h rpmHeader) str(tag int) string {
	v, _ := h[tag].([]string)
	return strings.Join(v, "\n")
}

func (h rpmHeader) files() map[string]rpmFile {
	base, _ := h[1117].([]string)
	dirs, _ := h[1118].([]string)
	idx, _ := h[1116].([]int)
	modes, _ := h[1030].([]int)
	flags, _ := h[1037].([]int)
	users, _ := h[1039].([]string)
	out := map[string]rpmFile{}
	for i, b := range base {
		if i >= len(idx) || i >= len(modes) || i >= len(flags) || i >= len(users) {
			break
		}
		out[dirs[idx[i]]+b] = rpmFile{mode: fs.FileMode(modes[i] & 0o7777), user: users[i], config: flags[i]&1 != 0}
	}
	return out
}
