package portal

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestLivePageNamesBrokers: each live session says which broker the
// person's connect reached and which holds the device: one name when the
// holder served the person itself, "serving → holder" when relayed.
func TestLivePageNamesBrokers(t *testing.T) {
	p := New(Config{PublicURL: "https://fieldpass.example.com"})
	start := time.Now().Add(-time.Minute)
	d := liveData{GrantEnd: map[string]time.Time{}, Sessions: []*fieldpass.Session{
		{ID: "s1", User: "eng@example.com", Device: "pump-1", Service: "ssh", BrokerID: "broker-b", ServedBy: "broker-a", Start: start, BytesIn: 2048},
		{ID: "s2", User: "eng@example.com", Device: "pump-2", Service: "ssh", BrokerID: "broker-c", Start: start},
	}}
	rec := httptest.NewRecorder()
	p.render(rec, httptest.NewRequest(http.MethodGet, "/live", nil), http.StatusOK, "live", view{Title: "Live sessions", Current: "live", Data: d})
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	cells := regexp.MustCompile(`(?s)<td data-label="Broker"[^>]*>(.*?)</td>`).FindAllStringSubmatch(rec.Body.String(), -1)
	if len(cells) != 2 {
		t.Fatalf("%d broker cells, want 2:\n%s", len(cells), rec.Body)
	}
	text := func(s string) string { return strings.TrimSpace(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(s, "")) }
	if got := text(cells[0][1]); got != "broker-a → broker-b" {
		t.Errorf("relayed session's broker cell = %q, want %q", got, "broker-a → broker-b")
	}
	if got := text(cells[1][1]); got != "broker-c" {
		t.Errorf("local session's broker cell = %q, want %q", got, "broker-c")
	}
}
