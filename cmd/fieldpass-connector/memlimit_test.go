package main

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"
)

// The memory limit: the flag's default suits a 64 MB router, GOMEMLIMIT
// wins over the default but not over a flag given, and bad sizes are
// refused saying what a size looks like.
func TestMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })

	for _, tt := range []struct {
		flag     string
		explicit bool
		env      string
		want     int64 // the runtime's limit after; 0: left as it was
		says     string
	}{
		{defaultMemoryLimit, false, "", 16 << 20, "16MiB"},
		{defaultMemoryLimit, false, "48MiB", 0, "GOMEMLIMIT=48MiB"},
		{"16MiB", true, "48MiB", 16 << 20, "16MiB"},
		{"1GiB", true, "", 1 << 30, "1GiB"},
		{"4096", true, "", 4096, "4096"},
		{"off", true, "", math.MaxInt64, "off"},
	} {
		debug.SetMemoryLimit(12345)
		says, err := memoryLimit(tt.flag, tt.explicit, tt.env)
		if err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		want := tt.want
		if want == 0 {
			want = 12345
		}
		if got := debug.SetMemoryLimit(-1); got != want || says != tt.says {
			t.Errorf("%+v: limit %d, says %q; want %d, %q", tt, got, says, want, tt.says)
		}
	}
	for _, bad := range []string{"", "24MB", "-1MiB", "0", "lots", "9999999999TiB"} {
		if _, err := memoryLimit(bad, true, ""); err == nil {
			t.Errorf("size %q accepted", bad)
		}
	}
	_, _, err := runCmd("run", "--state-dir", t.TempDir(), "--service", "ssh=127.0.0.1:22", "--memory-limit", "24MB")
	if cliexit.Code(err) != 2 || !strings.Contains(err.Error(), "24MiB") {
		t.Errorf("--memory-limit 24MB: %v, want a usage error showing a size", err)
	}
}
