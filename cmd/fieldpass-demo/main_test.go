package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultDir(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"nothing set", nil, ".demo"},
		{"XDG_STATE_HOME", map[string]string{"XDG_STATE_HOME": "/s"}, "/s/fieldpass-demo"},
		{"FIELDPASS_DEMO_DIR wins", map[string]string{"XDG_STATE_HOME": "/s", "FIELDPASS_DEMO_DIR": "/d"}, "/d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := defaultDir(func(k string) string { return tc.env[k] }); got != tc.want {
				t.Errorf("defaultDir = %q, want %q", got, tc.want)
			}
		})
	}
}

// A missing binary is named, with how to get it, before anything starts.
func TestRunMissingBinaries(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--dir", filepath.Join(dir, "demo"), "--bin", dir}, func(string) string { return "" }, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "fieldpass-broker not found") || !strings.Contains(err.Error(), "make demo") {
		t.Errorf("run with no binaries: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "demo")); !os.IsNotExist(err) {
		t.Errorf("the demo directory was made although nothing could start (%v)", err)
	}
}

// reset removes the demo directory, and is content when there is none.
func TestReset(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for range 2 {
		if err := run(context.Background(), []string{"reset", "--dir", dir}, func(string) string { return "" }, &out, &out); err != nil {
			t.Fatalf("reset: %v", err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("%s is still there after reset (%v)", dir, err)
		}
	}
}
