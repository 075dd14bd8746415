//go:build unix && !linux

package demo

import (
	"syscall"
	"time"
)

// sysProcAttr puts the child in a process group of its own. Without a
// parent-death signal here, a demo killed outright leaves its children.
func sysProcAttr(cred *syscall.Credential, _ syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// adoptOrphans is Linux's only (PR_SET_CHILD_SUBREAPER).
func adoptOrphans() {}

func stopOrphans(map[int]bool, time.Duration) []string { return nil }
