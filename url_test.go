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
