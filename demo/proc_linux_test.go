package demo

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A program that leaves a process of its own session behind (as sshd does
// with a live session when its listener stops) must not leave it running:
// stop ends the group, stopOrphans the escapee, which the demo adopted.
func TestStopLeavesNothing(t *testing.T) {
	adoptOrphans()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "escapee.pid")
	p, err := startProc("sh", filepath.Join(dir, "log"), os.Environ(), nil, syscall.SIGTERM, "/bin/sh", "-c",
		`setsid sh -c 'echo $$ > `+pidFile+`; exec sleep 300' & sleep 300`)
	if err != nil {
		t.Fatal(err)
	}
	var escapee int
	if err := waitFor(p, 10*time.Second, "forked", func() bool {
		b, _ := os.ReadFile(pidFile)
		escapee, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return escapee > 0
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.stop(syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(escapee, 0) != nil {
		t.Fatalf("the escapee %d ended with its parent's group: the test proves nothing", escapee)
	}
	left := stopOrphans(map[int]bool{}, 5*time.Second)
	if len(left) != 1 || !strings.HasPrefix(left[0], strconv.Itoa(escapee)+" ") {
		t.Errorf("stopOrphans stopped %q, want the escapee %d", left, escapee)
	}
	if syscall.Kill(escapee, 0) == nil {
		t.Errorf("the escapee %d still runs", escapee)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/work/bin":       "/work/bin",
		"/home/a b/.demo": "'/home/a b/.demo'",
		"it's":            `'it'\''s'`,
		"":                "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
