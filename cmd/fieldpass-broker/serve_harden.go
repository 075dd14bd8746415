package main

import (
	"flag"
	"fmt"
)

// hardenFlags are serve's limits from issue 10 ("Hardening"), kept
// together so that serve.go only passes them on.
type hardenFlags struct {
	maxStreamsPerSession *int
}

func addHardenFlags(fset *flag.FlagSet) *hardenFlags {
	return &hardenFlags{
		maxStreamsPerSession: fset.Int("max-streams-per-session", 64, "streams (connections to the device's service) one person's session may carry at once (1 to 10000)"),
	}
}

// check validates the flags after parsing.
func (h *hardenFlags) check() error {
	if n := *h.maxStreamsPerSession; n < 1 || n > 10000 {
		return fmt.Errorf("--max-streams-per-session %d: want 1 to 10000", n)
	}
	return nil
}
