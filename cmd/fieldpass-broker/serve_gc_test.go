package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, c := range []struct {
		name     string
		flag     int
		explicit bool
		env      string
		want     string
		applied  int // the runtime's target afterwards; 0: left as it was
	}{
		{"default", defaultGCPercent, false, "", "25", 25},
		{"flag", 50, true, "", "50", 50},
		{"GOGC wins over the default", defaultGCPercent, false, "200", "GOGC=200", 0},
		{"the flag wins over GOGC", 40, true, "200", "40", 40},
	} {
		t.Run(c.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			got, err := gcPercent(c.flag, c.explicit, c.env)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("in effect %q, want %q", got, c.want)
			}
			applied := debug.SetGCPercent(100)
			if c.applied == 0 {
				c.applied = 100
			}
			if applied != c.applied {
				t.Errorf("runtime GC percent %d, want %d", applied, c.applied)
			}
		})
	}
	for _, bad := range []int{0, 4, 1001, -1} {
		if _, err := gcPercent(bad, true, ""); err == nil || !strings.Contains(err.Error(), "want 5 to 1000") {
			t.Errorf("gcPercent(%d): %v, want an error naming the range", bad, err)
		}
	}
}

func TestServeRejectsGCPercent(t *testing.T) {
	_, _, err := runCmd(t, "", "serve", "--database-url", "postgres://x@127.0.0.1:1/x", "--public-url", "https://broker.example.com", "--gc-percent", "2")
	if err == nil || !strings.Contains(err.Error(), "--gc-percent 2: want 5 to 1000") {
		t.Fatalf("serve --gc-percent 2: %v, want a usage error naming the range", err)
	}
}
