package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServePublicURL: serve refuses a public URL its connectors and CLI
// would refuse (plain http to a remote host) and one with a path, saying
// what to give instead.
func TestServePublicURL(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"http://broker.example.com", "use https"},
		{"http://10.0.0.5:8080", "use https"},
		{"https://broker.example.com/fieldpass", "has a path"},
		{"ftp://broker.example.com", "want https://host[:port]"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, _, err := runCmd(t, "", "serve", "--public-url", tc.url, "--key-file", filepath.Join(t.TempDir(), "broker.key"))
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--public-url") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want a usage error about --public-url saying %q", err, tc.want)
			}
		})
	}
	for _, ok := range []string{"https://broker.example.com/", "http://127.0.0.1:8080", "http://localhost:8080"} {
		if _, err := publicURLFlag(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// TestReportStaleHelpDefaults: report stale -h shows each default once, in
// days, as people type them.
func TestReportStaleHelpDefaults(t *testing.T) {
	out, errOut, _ := runCmd(t, "", "report", "stale", "-h")
	help := out + errOut
	if strings.Contains(help, "h0m0s") || strings.Count(help, "(default 90d)") != 1 {
		t.Fatalf("report stale -h:\n%s\nwant each default once, in days", help)
	}
}

// TestServeConfigFile: serve reads its flags from --config as the
// connector does; the command line wins, and a bad line names itself.
func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "broker.conf")
	os.WriteFile(path, []byte("# broker\npublic-url = http://broker.example.com\nkey-file = "+filepath.Join(dir, "broker.key")+"\n"), 0o600)
	_, _, err := runCmd(t, "", "serve", "--config", path)
	if err == nil || !strings.Contains(err.Error(), "--public-url") || !strings.Contains(err.Error(), "use https") {
		t.Errorf("public-url from the file: got %v, want it read and refused", err)
	}
	_, _, err = runCmd(t, "", "serve", "--config", path, "--public-url", "https://broker.example.com/x")
	if err == nil || !strings.Contains(err.Error(), "has a path") {
		t.Errorf("the command line should win over the file: got %v", err)
	}
	os.WriteFile(path, []byte("no-such-flag = 1\n"), 0o600)
	_, _, err = runCmd(t, "", "serve", "--config", path)
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), path+":1: unknown setting") {
		t.Errorf("unknown setting: got %v", err)
	}
}

// TestLoadOrCreateKey: the broker's key is created only when asked (serve
// --init), once, 0600, and said to be new only then.
func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "broker.key")
	if _, _, err := loadOrCreateKey(path, false); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--init") {
		t.Fatalf("missing key without --init: %v; want an error naming the path and --init", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key was written without --init: %v", err)
	}
	k1, created, err := loadOrCreateKey(path, true)
	if err != nil || !created {
		t.Fatalf("first start: created %v, %v", created, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	for _, create := range []bool{true, false} {
		k2, created, err := loadOrCreateKey(path, create)
		if err != nil || created || k1.String() != k2.String() {
			t.Fatalf("later start (--init %v): created %v, same key %v, %v", create, created, k1.String() == k2.String(), err)
		}
	}
}
