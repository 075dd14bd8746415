package demo

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sysProcAttr puts the child in a process group of its own and has the
// kernel send it stopSig should the demo die first (SIGKILL included), so
// an interrupted demo does not leave a broker or Postgres behind. Go sets
// the parent-death signal after switching to cred, which would clear it.
func sysProcAttr(cred *syscall.Credential, stopSig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred, Pdeathsig: stopSig}
}

// adoptOrphans makes this process the reaper of its descendants' orphans:
// a session sshd forked lives on after its listener stops, and must not
// end up under init, out of the demo's reach.
func adoptOrphans() {
	const prSetChildSubreaper = 36
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}

// stopOrphans ends the processes adopted by adoptOrphans (those whose
// parent is now this process but which it did not start itself: started
// lists those it did), first with SIGTERM, after grace with SIGKILL, and
// reaps them.
func stopOrphans(started map[int]bool, grace time.Duration) []string {
	orphans := func() []int {
		var pids []int
		me := os.Getpid()
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || started[pid] {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			// The command name, in parentheses, may hold spaces: the
			// fields after its closing parenthesis are state, then ppid.
			rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
			f := strings.Fields(rest)
			if len(f) > 1 && f[1] == strconv.Itoa(me) {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	var names []string
	for _, pid := range orphans() {
		// A zombie (no command line) only needs reaping, below.
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); len(cmd) > 0 {
			names = append(names, fmt.Sprintf("%d %s", pid, strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))))
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	for deadline := time.Now().Add(grace); ; time.Sleep(50 * time.Millisecond) {
		left := orphans()
		for _, pid := range left {
			var ws syscall.WaitStatus
			if got, _ := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); got == pid {
				continue
			}
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				syscall.Wait4(pid, &ws, 0, nil)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return names
		}
	}
}
