//go:build !linux

package wgtest

import "testing"

// RunInNetns skips tb: network namespaces are Linux's.
func RunInNetns(tb testing.TB, args []string, env ...string) {
	tb.Helper()
	tb.Skip("needs a Linux network namespace")
}
