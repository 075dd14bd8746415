package portal

import (
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestEnrolPageInstallLines: the enrolment page shows, beside the enrol
// command, the one-line install of each kind of device, and what a person
// copies from it is exactly the command (the page escapes quotes and &&).
func TestEnrolPageInstallLines(t *testing.T) {
	p := New(Config{PublicURL: "https://fieldpass.example.com", DownloadURL: "https://mirror.example.com/fieldpass/v1.2.3"})
	lines := fieldpass.ConnectorInstallLines(p.cfg.DownloadURL, "v1.2.3")
	d := enrolData{Name: "pump-7", Token: "fpe_test", Expires: time.Now().Add(time.Hour), Broker: p.cfg.PublicURL, Install: lines, Version: "v1.2.3"}
	rec := httptest.NewRecorder()
	p.render(rec, httptest.NewRequest(http.MethodPost, "/enrol", nil), http.StatusOK, "enrol", view{Title: "Enrol pump-7", Data: d})
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var shown []string
	for _, m := range regexp.MustCompile(`(?s)<code[^>]*>(.*?)</code>`).FindAllStringSubmatch(rec.Body.String(), -1) {
		shown = append(shown, html.UnescapeString(m[1]))
	}
	all := strings.Join(shown, "\n")
	for _, l := range lines {
		if !strings.Contains(rec.Body.String(), html.EscapeString(l.Target)) {
			t.Errorf("the page does not name %q", l.Target)
		}
		found := false
		for _, s := range shown {
			found = found || s == l.Command
		}
		if !found {
			t.Errorf("the page shows no code block reading exactly %q", l.Command)
		}
	}
	for _, want := range []string{".deb", ".rpm", "opkg install", "sha256sum -c", "https://mirror.example.com/fieldpass/v1.2.3/",
		"fieldpass-connector enroll --broker https://fieldpass.example.com --token fpe_test"} {
		if !strings.Contains(all, want) {
			t.Errorf("the page's commands lack %q", want)
		}
	}
}

// TestEnrolPageTunnelCommand: with an enrol command inside WireGuard, the
// page shows it, with the state directory, as the command to copy.
func TestEnrolPageTunnelCommand(t *testing.T) {
	p := New(Config{PublicURL: "https://fieldpass.example.com"})
	cmd := "fieldpass-connector enroll --token fpe_test --broker-key KEY= --endpoint fieldpass.example.com:51820 --address 10.77.255.254/16"
	d := enrolData{Name: "pump-7", Token: "fpe_test", Expires: time.Now().Add(time.Hour), Broker: p.cfg.PublicURL, Command: cmd}
	rec := httptest.NewRecorder()
	p.render(rec, httptest.NewRequest(http.MethodPost, "/enrol", nil), http.StatusOK, "enrol", view{Title: "Enrol pump-7", Data: d})
	m := regexp.MustCompile(`(?s)<code id="enrol-command">(.*?)</code>`).FindStringSubmatch(rec.Body.String())
	if m == nil || html.UnescapeString(m[1]) != cmd+" --state-dir /var/lib/fieldpass-connector" {
		t.Errorf("enrol command shown: %q, want the WireGuard one", m)
	}
}
