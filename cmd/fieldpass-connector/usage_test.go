package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"
)

func runCmd(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, func(string) string { return "" }, &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestUsage: a usage error shows the synopsis and where the flags are, not
// every flag above the one line that matters; -h shows them all on stdout
// and exits 0, as the fieldpass CLI does.
func TestUsage(t *testing.T) {
	_, errOut, err := runCmd("run", "--no-such-flag")
	if cliexit.Code(err) != 2 {
		t.Fatalf("unknown flag: %v (exit %d), want exit 2", err, cliexit.Code(err))
	}
	if n := strings.Count(errOut, "\n"); n > 2 || !strings.Contains(errOut, `Run "fieldpass-connector run -h"`) {
		t.Errorf("usage error printed %d lines:\n%s", n, errOut)
	}
	out, errOut, err := runCmd("run", "-h")
	if !errors.Is(err, flag.ErrHelp) || cliexit.Code(err) != 0 || errOut != "" || !strings.Contains(out, "-service") {
		t.Errorf("run -h: %v (exit %d), stderr %q; want every flag on stdout, exit 0", err, cliexit.Code(err), errOut)
	}
	// A bad target is refused at start, before anything is read.
	_, _, err = runCmd("run", "--state-dir", t.TempDir(), "--service", "ssh=127.0.0.1:99999")
	if err == nil || !strings.Contains(err.Error(), "1 to 65535") {
		t.Errorf("--service ssh=127.0.0.1:99999: %v, want refused naming the port range", err)
	}
}
