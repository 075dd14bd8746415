package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeAlertFlagsRefused: alert flags that would leak the secret or
// send alerts in the clear are refused before anything starts.
func TestServeAlertFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"serve", "--public-url", "https://fieldpass.example.com", "--key-file", filepath.Join(dir, "broker.key")}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"http to a remote host", []string{"--alert-webhook", "http://hooks.example.com/x", "--alert-secret-file", short}, "only to a loopback"},
		{"no secret file", []string{"--alert-webhook", "https://hooks.example.com/x"}, "needs --alert-secret-file"},
		{"missing secret file", []string{"--alert-webhook", "https://hooks.example.com/x", "--alert-secret-file", filepath.Join(dir, "nope")}, "alert secret"},
		{"short secret", []string{"--alert-webhook", "https://hooks.example.com/x", "--alert-secret-file", short}, "at least 16 bytes"},
		{"sensitive label without webhook", []string{"--alert-sensitive-label", "sensitive=true"}, "need --alert-webhook"},
		{"threshold too short", []string{"--alert-webhook", "https://hooks.example.com/x", "--alert-secret-file", short, "--alert-offline-after", "1s"}, "at least 1m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, err := runCmd(t, "", append(append([]string{}, base...), tc.args...)...)
			if err == nil || !strings.Contains(err.Error()+errOut, tc.want) {
				t.Errorf("got %v (stderr %q), want an error containing %q", err, errOut, tc.want)
			}
		})
	}
}
