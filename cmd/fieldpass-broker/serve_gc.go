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
// little garbage while devices idle, so at 100 much of its memory was
// headroom for garbage, while a collection costs the same marking work
// whatever the target: at 25 it collects four times as often per byte of
// garbage. Measured at 10,000 idle devices (bench/README.md): 119.6 KiB
// per device at 100, 74.5 at 25 (with less garbage and a goroutine fewer
// per device), for about 2.6 % of one core (0.26 % per 1,000 devices).
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
