//go:build linux

package e2e_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/fieldpass/fieldpass/tunnel"
)

// TestPortalEscapes: strings that devices and people control reach every
// page and export as text, never as markup. A device enrols reporting a
// connector version that is an HTML payload (what a compromised or fake
// device can send), a person asks for access with one as the reason and
// ticket, and an admin grants with one; every page that shows them is
// opened in a real browser, which must show the payloads literally and run
// none of them (a payload that ran would retitle the page).
func TestPortalEscapes(t *testing.T) {
	t.Parallel()
	b, idp := startPortalBroker(t, adminPerson, auditorPerson, engineerPerson)
	const version = `"><svg/onload=document.title='pwned'>` // printable ASCII, no spaces: what the store takes
	key := make([]byte, 32)
	rand.Read(key)
	body, _ := json.Marshal(tunnel.EnrollRequest{Token: b.token("evil-1", "--label", "site=x"), PublicKey: base64.StdEncoding.EncodeToString(key), ConnectorVersion: version})
	resp, err := http.Post(b.URL()+tunnel.EnrollPath, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("enrol with a hostile version: %s", resp.Status)
	}
	const reason = `<script>document.title='pwned'</script><img src=x onerror="document.title='pwned'">`
	eng := b.tokenPerson(engineerPerson.Email, "engineer")
	if r := eng.run(t, "request", "create", "--device", "evil-1", "--service", "ssh", "--duration", "1h", "--reason", reason, "--ticket", `T-"><b>1`); r.code != 0 {
		t.Fatalf("request create: %v", r)
	}
	ops := b.tokenPerson("ops@example.com", "admin")
	if r := ops.run(t, "grant", "create", "--user", engineerPerson.Email, "--device", "evil-1", "--service", "web", "--duration", "1h", "--reason", reason); r.code != 0 {
		t.Fatalf("grant create: %v", r)
	}

	admin := newChrome(t)
	admin.logIn(b, idp, adminPerson, "/devices")
	admin.see(version)
	for _, path := range []string{"/devices/evil-1", "/approvals", "/grants", "/audit?action=device.enroll", "/audit?action=grant.create", "/access"} {
		admin.open(b, path)
		if path != "/access" {
			if text := admin.text(); !strings.Contains(text, version) && !strings.Contains(text, reason) {
				t.Errorf("%s shows neither payload as text:\n%s", path, tail(text, 30))
			}
		}
		if title := admin.title(); strings.Contains(title, "pwned") {
			t.Fatalf("a payload ran as script on %s", path)
		}
		if n := eval(admin, "injected elements", chromedp.Evaluate[int](`document.querySelectorAll("main script, main svg, main img, main b").length`)); n > 0 {
			t.Errorf("%s holds %d elements made from a payload", path, n)
		}
	}
	// The exports carry them as data.
	csv := eval(admin, "export", chromedp.Evaluate[string](`fetch("/sessions/export/json", {credentials: "same-origin"}).then(r => r.headers.get("Content-Type"))`, chromedp.EvalAwaitPromise))
	if csv != "application/json" {
		t.Errorf("the JSON export answers %q", csv)
	}
}
