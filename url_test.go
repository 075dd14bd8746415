package fieldpass_test

import (
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass"
)

func TestParseBrokerURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://broker.example.com/": "https://broker.example.com",
		"http://127.0.0.1:8080":       "http://127.0.0.1:8080",
		"http://localhost:8080/base/": "http://localhost:8080/base",
		"http://[::1]:8080":           "http://[::1]:8080",
	} {
		u, err := fieldpass.ParseBrokerURL(raw)
		if err != nil || u.String() != want {
			t.Errorf("ParseBrokerURL(%q) = %v, %v; want %s", raw, u, err, want)
		}
	}
	for _, raw := range []string{"", "broker.example.com", "ftp://x", "http://broker.example.com", "http://10.0.0.1",
		"https://user:secret@broker.example.com", "https://b.example.com/?token=x", "https://b.example.com/#x"} {
		_, err := fieldpass.ParseBrokerURL(raw)
		if fieldpass.ErrorCode(err) != fieldpass.EINVALID {
			t.Errorf("ParseBrokerURL(%q): err %v, want invalid", raw, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseBrokerURL(%q): message repeats the password: %v", raw, err)
		}
	}
}

// A malformed broker URL is refused saying both forms that work: https,
// and plain http for a broker on this machine. host:port alone is told the
// exact URL to type (issue 11: --broker 127.0.0.1:8080).
func TestParseBrokerURLSaysLoopbackHTTP(t *testing.T) {
	for _, in := range []string{"broker.example.com", "ftp://broker.example.com"} {
		_, err := fieldpass.ParseBrokerURL(in)
		if msg := fieldpass.ErrorMessage(err); !strings.Contains(msg, "https://host[:port]") || !strings.Contains(msg, "http://127.0.0.1:PORT") {
			t.Errorf("%s: %v, want both forms named", in, err)
		}
	}
	for in, want := range map[string]string{
		"127.0.0.1:8080":         "it needs a scheme: http://127.0.0.1:8080 (plain http is fine for a broker on this machine",
		"localhost:8080":         "it needs a scheme: http://localhost:8080 (plain http is fine",
		"[::1]:8080":             "it needs a scheme: http://[::1]:8080",
		"broker.example.com:443": "it needs a scheme: https://broker.example.com:443 (plain http only to a broker on this machine)",
	} {
		_, err := fieldpass.ParseBrokerURL(in)
		if msg := fieldpass.ErrorMessage(err); fieldpass.ErrorCode(err) != fieldpass.EINVALID || !strings.Contains(msg, want) {
			t.Errorf("%s: %v, want invalid saying %q", in, err, want)
		}
	}
}
