package fieldpass_test

import (
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass"
)

func TestPackageVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-rc1", "1.2.3~rc1"},
		{"v1.2.3-4-gabc1234", "1.2.3+4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+4.gabc1234.dirty"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"dev", "0.0.0~dev"},
		{"6f6667c", "0.0.0~6f6667c"},
		{"6f6667c-dirty", "0.0.0~6f6667c+dirty"},
		{"", "0.0.0~"},
		{"v1.2.3 bad/ver", "1.2.3.bad.ver"},
	} {
		if got := fieldpass.PackageVersion(tc.in); got != tc.want {
			t.Errorf("PackageVersion(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestConnectorInstallLines(t *testing.T) {
	lines := fieldpass.ConnectorInstallLines("", "v1.2.3")
	targets := map[string]string{}
	for _, l := range lines {
		if strings.Contains(l.Command, "\n") || l.Target == "" {
			t.Errorf("%q: want one line with a target", l)
		}
		if !strings.Contains(l.Command, fieldpass.DownloadURL("v1.2.3")+"/") {
			t.Errorf("%s: %q does not fetch from the release", l.Target, l.Command)
		}
		targets[l.Target] = l.Command
	}
	for _, p := range fieldpass.ConnectorPlatforms() {
		bin := targets["Linux binary "+p.Name]
		if !strings.Contains(bin, "/"+fieldpass.BinaryFile("fieldpass-connector", p)+" ") || !strings.Contains(bin, "sha256sum -c") {
			t.Errorf("%s: %q fetches no binary checked against the checksums", p.Name, bin)
		}
		if ipk := targets["OpenWrt "+p.Name]; p.IPK && !strings.HasSuffix(ipk, "/"+fieldpass.IPKFile("fieldpass-connector", "v1.2.3", p)) {
			t.Errorf("OpenWrt %s: %q", p.Name, ipk)
		}
	}
	if got := fieldpass.ConnectorInstallLines("https://mirror.example.com/fp/", "v1.2.3")[0].Command; !strings.Contains(got, `"https://mirror.example.com/fp/fieldpass-connector_1.2.3_$(dpkg --print-architecture).deb"`) {
		t.Errorf("the .deb line with a mirror: %q", got)
	}
}
