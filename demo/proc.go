package demo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// proc is one program the demo started, in a process group of its own so
// that a terminal's Ctrl-C reaches only the demo, which then stops its
// programs in order (Postgres last, after everything using it).
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	err     error         // valid after done
}

// startProc runs bin with its output appended to logPath. cred, if not
// nil, is the user it runs as. stopSig is sent to it should the demo itself
// die without stopping it (Linux: the parent-death signal).
func startProc(name, logPath string, env []string, cred *syscall.Credential, stopSig syscall.Signal, bin string, args ...string) (*proc, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log: %w", name, err)
	}
	defer log.Close() // the child has its own copy
	fmt.Fprintf(log, "--- %s: %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr(cred, stopSig)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the process's group (sshd and Postgres have children),
// waits up to grace, then kills the group.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) error {
	pid := p.cmd.Process.Pid
	if p.exited() {
		// Its children may outlive it; they are in its group.
		syscall.Kill(-pid, syscall.SIGKILL)
		return nil
	}
	syscall.Kill(-pid, sig)
	select {
	case <-p.done:
		syscall.Kill(-pid, syscall.SIGKILL)
		return nil
	case <-time.After(grace):
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s did not stop within %s of %s: killed", p.name, grace, sig)
}

// failure describes an unexpected exit, with the end of the log.
func (p *proc) failure() error {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return fmt.Errorf("%s stopped (%v); the end of %s:\n  %s", p.name, p.err, p.logPath, strings.Join(lines, "\n  "))
}

// waitFor polls cond every 100 ms until it holds, p exits, or timeout.
func waitFor(p *proc, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if p != nil && p.exited() {
			return p.failure()
		}
		if time.Now().After(deadline) {
			if p != nil {
				return fmt.Errorf("%s: not %s after %s; see %s", p.name, what, timeout, p.logPath)
			}
			return fmt.Errorf("not %s after %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

var errStopped = errors.New("stopped")
