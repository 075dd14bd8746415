package wgtest

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// RunInNetns runs this test binary again with the test flags args (such as
// "-test.run=^TestX$") and env added, in a network namespace of its own with
// only loopback, up: a test there may create interfaces, change sysctls and
// bind any port without touching the host's. The child's output goes to
// this process's; tb fails if the child does. It needs root (CAP_SYS_ADMIN)
// and ip(8); without root, tb is skipped. A benchmark runs the child once,
// from the framework's first call (b.N is 1), which must not call b.Loop.
func RunInNetns(tb testing.TB, args []string, env ...string) {
	tb.Helper()
	if b, ok := tb.(*testing.B); ok && b.N > 1 {
		return
	}
	if os.Geteuid() != 0 {
		tb.Skip("needs root, to make a network namespace")
	}
	if InNetns() {
		tb.Fatal("RunInNetns called inside its own network namespace")
	}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	// sh brings loopback up and then becomes the test binary, so the child
	// is one process, in the namespace from its first instruction.
	argv := append([]string{"-c", `ip link set lo up && exec "$0" "$@"`, os.Args[0]}, args...)
	cmd := exec.Command("sh", argv...)
	cmd.Env = append(append(os.Environ(), NetnsEnv+"=1"), env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		tb.Fatalf("test binary in its own network namespace: %v (its output is above)", err)
	}
}
