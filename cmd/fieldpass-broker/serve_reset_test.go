package main

import (
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeHandshakeResetAfter: the flag says why it exists, and values
// outside 10s to 24h are refused before anything starts.
func TestServeHandshakeResetAfter(t *testing.T) {
	out, errOut, err := runCmd(t, "", "serve", "-h")
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("serve -h: %v", err)
	}
	for _, want := range []string{"-handshake-reset-after duration", "clock went backwards", "(default 3m0s)"} {
		if !strings.Contains(out+errOut, want) {
			t.Errorf("serve -h lacks %q", want)
		}
	}
	for _, v := range []string{"0s", "5s", "-1m", "25h"} {
		t.Run(v, func(t *testing.T) {
			_, _, err := runCmd(t, "", "serve", "--public-url", "https://fieldpass.example.com",
				"--key-file", filepath.Join(t.TempDir(), "broker.key"), "--handshake-reset-after", v)
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--handshake-reset-after") {
				t.Errorf("--handshake-reset-after %s: got %v, want a usage error naming the flag", v, err)
			}
		})
	}
}

// TestServeNudgeRate: the restart call-back rate is bounded before anything
// starts.
func TestServeNudgeRate(t *testing.T) {
	for _, v := range []string{"0", "-5", "10001", "x"} {
		t.Run(v, func(t *testing.T) {
			_, _, err := runCmd(t, "", "serve", "--public-url", "https://fieldpass.example.com",
				"--key-file", filepath.Join(t.TempDir(), "broker.key"), "--nudge-rate", v)
			if err == nil || !strings.Contains(err.Error(), "nudge-rate") {
				t.Errorf("--nudge-rate %s: got %v, want an error naming the flag", v, err)
			}
		})
	}
}
