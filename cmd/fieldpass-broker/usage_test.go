package main

import (
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"
)

// TestUsageErrorsAreShort: a usage error shows the synopsis and where the
// flags are, not every flag above the one line that matters; -h shows them
// all, on stdout, and exits 0.
func TestUsageErrorsAreShort(t *testing.T) {
	_, errOut, err := runCmd(t, "", "serve", "--no-such-flag")
	if cliexit.Code(err) != 2 {
		t.Fatalf("unknown flag: %v (exit %d), want exit 2", err, cliexit.Code(err))
	}
	if n := strings.Count(errOut, "\n"); n > 2 || !strings.Contains(errOut, `Run "fieldpass-broker serve -h"`) {
		t.Errorf("usage error printed %d lines:\n%s\nwant the synopsis and where the flags are", n, errOut)
	}
	out, errOut, err := runCmd(t, "", "serve", "-h")
	if !errors.Is(err, flag.ErrHelp) || cliexit.Code(err) != 0 || errOut != "" || !strings.Contains(out, "-public-url") {
		t.Errorf("serve -h: %v (exit %d), stdout %d bytes, stderr %q; want every flag on stdout, exit 0", err, cliexit.Code(err), len(out), errOut)
	}
}
