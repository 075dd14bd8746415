package main

import (
	"fmt"
	"runtime/debug"
	"strconv"
)

// defaultGCPercent is the broker's garbage collector target: the heap may
// grow by this percentage of the live heap (and stacks) before the next
// collection, where Go's default is 100. A broker's heap is nearly all
// long-lived per-device state (WireGuard peers, tunnels) and it makes
// little garbage while devices idle, so at 100 most of its memory was
// headroom for garbage (bench/README.md: 106.8 KiB per idle device of
// which 53 KiB live at 10,000 devices), while a collection costs the same
// marking work whatever the target: at 25 it collects four times as often
// per byte of garbage, which at idle is a fraction of a percent of a core.
const defaultGCPercent = 25

// gcPercent applies the garbage collector target and says what is in
// effect: the flag if given (on the command line or in --config), else
// GOGC if set (the runtime has read it already), else the default.
func gcPercent(flagValue int, explicit bool, env string) (string, error) {
	if !explicit && env != "" {
		return "GOGC=" + env, nil
	}
	if flagValue < 5 || flagValue > 1000 {
		return "", fmt.Errorf("%d: want 5 to 1000 (percent of the live heap; default %d)", flagValue, defaultGCPercent)
	}
	debug.SetGCPercent(flagValue)
	return strconv.Itoa(flagValue), nil
}
