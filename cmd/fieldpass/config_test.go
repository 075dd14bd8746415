package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	tokenA = "fpt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	tokenB = "fpt_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA"
)

func TestConfigPath(t *testing.T) {
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"XDG_CONFIG_HOME": "/x", "HOME": "/home/a"}, "/x/fieldpass/config.json"},
		{map[string]string{"XDG_CONFIG_HOME": "relative", "HOME": "/home/a"}, "/home/a/.config/fieldpass/config.json"},
		{map[string]string{"XDG_CONFIG_HOME": "", "HOME": "/home/a"}, "/home/a/.config/fieldpass/config.json"},
	} {
		e, _, _ := testEnv(t, tc.vars)
		got, err := e.configPath()
		if err != nil || got != tc.want {
			t.Errorf("%v: got %q, %v; want %q", tc.vars, got, err, tc.want)
		}
	}
	e, _, _ := testEnv(t, map[string]string{"XDG_CONFIG_HOME": ""})
	if _, err := e.configPath(); err == nil {
		t.Error("no XDG_CONFIG_HOME nor HOME: no error")
	}
}

// TestConfigModes: the saved config is 0600 in a 0700 directory, even one
// that existed wider, and a save replaces it whole.
func TestConfigModes(t *testing.T) {
	dir := t.TempDir()
	e, _, _ := testEnv(t, map[string]string{"XDG_CONFIG_HOME": dir})
	if err := os.MkdirAll(filepath.Join(dir, "fieldpass"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := savedConfig{Broker: "https://broker.example.com", Token: tokenA, Email: "a@example.com", ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	path, err := e.saveConfig(want)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, "fieldpass", "config.json") {
		t.Errorf("saved to %s", path)
	}
	for p, mode := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != mode {
			t.Errorf("%s: mode %o, want %o", p, got, mode)
		}
	}
	got, err := e.loadConfig()
	if err != nil || got != want {
		t.Errorf("load: got %+v, %v; want %+v", got, err, want)
	}
	if _, err := e.saveConfig(savedConfig{Broker: want.Broker}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.loadConfig(); got.Token != "" {
		t.Errorf("token still saved after a save without it")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("config directory holds %d files, want 1 (no temporary files left)", len(entries))
	}
}

func TestConfigMissingAndBroken(t *testing.T) {
	dir := t.TempDir()
	e, _, _ := testEnv(t, map[string]string{"XDG_CONFIG_HOME": dir})
	if c, err := e.loadConfig(); err != nil || c != (savedConfig{}) {
		t.Fatalf("missing config: %+v, %v; want empty, nil", c, err)
	}
	os.MkdirAll(filepath.Join(dir, "fieldpass"), 0o700)
	os.WriteFile(filepath.Join(dir, "fieldpass", "config.json"), []byte("{"), 0o600)
	if _, err := e.loadConfig(); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
		t.Fatalf("broken config: %v", err)
	}
}

// TestCredentialsPrecedence: FIELDPASS_BROKER and FIELDPASS_TOKEN each win
// over the saved login.
func TestCredentialsPrecedence(t *testing.T) {
	saved := savedConfig{Broker: "https://saved.example.com", Token: tokenA}
	for _, tc := range []struct {
		name       string
		vars       map[string]string
		save       bool
		wantBroker string
		wantToken  string
		wantErr    string
	}{
		{"saved only", nil, true, "https://saved.example.com", tokenA, ""},
		{"env only", map[string]string{envBroker: "https://env.example.com/", envToken: tokenB}, false, "https://env.example.com", tokenB, ""},
		{"env wins", map[string]string{envBroker: "https://env.example.com", envToken: tokenB}, true, "https://env.example.com", tokenB, ""},
		{"env token, saved broker", map[string]string{envToken: tokenB}, true, "https://saved.example.com", tokenB, ""},
		{"env broker, saved token", map[string]string{envBroker: "https://env.example.com"}, true, "https://env.example.com", tokenA, ""},
		{"nothing", nil, false, "", "", "no broker"},
		{"no token", map[string]string{envBroker: "https://env.example.com"}, false, "", "", "not logged in"},
		{"plain http", map[string]string{envBroker: "http://broker.example.com", envToken: tokenB}, false, "", "", "refusing plain http"},
		{"http loopback", map[string]string{envBroker: "http://127.0.0.1:8080", envToken: tokenB}, false, "http://127.0.0.1:8080", tokenB, ""},
		{"malformed token", map[string]string{envBroker: "https://env.example.com", envToken: "fpt_short"}, false, "", "", "malformed token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := map[string]string{}
			for k, v := range tc.vars {
				vars[k] = v
			}
			e, _, _ := testEnv(t, vars)
			if tc.save {
				if _, err := e.saveConfig(saved); err != nil {
					t.Fatal(err)
				}
			}
			c, err := e.credentials()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(message(err), tc.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "fpt_short") {
					t.Errorf("error repeats the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Broker != tc.wantBroker || c.Token != tc.wantToken {
				t.Errorf("got %s %s, want %s %s", c.Broker, c.Token, tc.wantBroker, tc.wantToken)
			}
		})
	}
}

func TestLogout(t *testing.T) {
	e, stdout, stderr := testEnv(t, nil)
	if _, err := e.saveConfig(savedConfig{Broker: "https://b.example.com", Token: tokenA, Email: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	r := runEnv(t, e, stdout, stderr, "logout")
	if r.err != nil {
		t.Fatal(r.err)
	}
	c, _ := e.loadConfig()
	if c.Token != "" || c.Email != "" || c.Broker != "https://b.example.com" {
		t.Errorf("after logout: %+v; want the broker only", c)
	}
	if strings.Contains(r.stdout+r.stderr, tokenA) {
		t.Error("logout printed the token")
	}
	r = runEnv(t, e, stdout, stderr, "logout")
	if r.err != nil || !strings.Contains(r.stdout, "Not logged in") {
		t.Errorf("second logout: %v, %q", r.err, r.stdout)
	}
}
