package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRoleMapKinds: role mappings by email, domain and subject are
// read from the command line and from the --config file alike, and a
// malformed one is refused before anything starts, saying what to write.
func TestServeRoleMapKinds(t *testing.T) {
	dir := t.TempDir()
	base := []string{"serve", "--public-url", "https://fieldpass.example.com", "--key-file", filepath.Join(dir, "broker.key"),
		"--oidc-issuer", "https://idp.example.com", "--oidc-client-id", "fieldpass"}
	conf := filepath.Join(dir, "broker.conf")
	if err := os.WriteFile(conf, []byte("role-map = admin=email:alice@example.com\nrole-map = engineer=domain:example..com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad domain on the command line", []string{"--role-map", "engineer=domain:alice@example.com"}, `"alice@example.com" is not a domain`},
		{"bad email", []string{"--role-map", "admin=email:alice"}, "invalid email address"},
		{"bad domain in the config file", []string{"--config", conf}, `"example..com" is not a domain`},
		{"no value", []string{"--role-map", "auditor=sub:"}, "nothing after sub:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, err := runCmd(t, "", append(append([]string{}, base...), tc.args...)...)
			if err == nil || !strings.Contains(err.Error()+errOut, tc.want) || !strings.Contains(err.Error()+errOut, "--role-map") {
				t.Errorf("got %v (stderr %q), want a --role-map error containing %q", err, errOut, tc.want)
			}
		})
	}
}
