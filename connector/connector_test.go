package connector_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/connector"
)

// TestBackoffFullJitter: delays stay within [base/2, min(max, base*2^n)] and
// are spread out, so a fleet does not retry in lockstep.
func TestBackoffFullJitter(t *testing.T) {
	base, max := time.Second, 5*time.Minute
	for attempt := 0; attempt < 30; attempt++ {
		ceil := base << attempt
		if attempt > 20 || ceil > max {
			ceil = max
		}
		seen := map[time.Duration]bool{}
		for i := 0; i < 200; i++ {
			d := connector.Backoff(base, max, attempt)
			if d < base/2 || d > ceil {
				t.Fatalf("attempt %d: delay %s outside [%s, %s]", attempt, d, base/2, ceil)
			}
			seen[d.Truncate(10*time.Millisecond)] = true
		}
		if attempt >= 2 && len(seen) < 50 {
			t.Fatalf("attempt %d: only %d distinct delays in 200: not jittered", attempt, len(seen))
		}
	}
}

func TestLoadStateErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := connector.LoadState(dir); err == nil || !strings.Contains(err.Error(), "enroll first") {
		t.Fatalf("empty dir: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "state.json"), []byte("{"), 0o600)
	if _, err := connector.LoadState(dir); err == nil {
		t.Fatal("corrupt state accepted")
	}
	os.WriteFile(filepath.Join(dir, "state.json"), []byte(`{"device_id":"0f8fad5b-d9cb-469f-a165-70867728950e"}`), 0o600)
	if _, err := connector.LoadState(dir); err == nil || !strings.Contains(err.Error(), "private key") {
		t.Fatalf("missing key: %v", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	s := &connector.State{}
	for name, svc := range map[string]map[string]string{
		"no services": {},
		"bad name":    {"SSH": "127.0.0.1:22"},
		"bad target":  {"ssh": "localhost"},
	} {
		_, err := connector.New(connector.Config{State: s, Services: svc})
		if fieldpass.ErrorCode(err) != fieldpass.EINVALID {
			t.Errorf("%s: err %v, want invalid", name, err)
		}
	}
	// Ports out of range are refused at start, saying what is allowed.
	for _, target := range []string{"127.0.0.1:99999", "127.0.0.1:-5", "127.0.0.1:0", "127.0.0.1:ssh", ":22"} {
		_, err := connector.New(connector.Config{State: s, Services: map[string]string{"ssh": target}})
		if fieldpass.ErrorCode(err) != fieldpass.EINVALID || !strings.Contains(err.Error(), "service ssh") ||
			!strings.Contains(err.Error(), "1 to 65535") && !strings.Contains(err.Error(), "HOST:PORT") {
			t.Errorf("target %s: err %v, want invalid naming the service and what a target must be", target, err)
		}
	}
	_, err := connector.New(connector.Config{State: s, Services: map[string]string{"ssh": "127.0.0.1:22"}, Keepalive: time.Millisecond})
	if fieldpass.ErrorCode(err) != fieldpass.EINVALID {
		t.Errorf("1ms keepalive: err %v, want invalid", err)
	}
}
