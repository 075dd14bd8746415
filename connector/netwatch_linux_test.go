package connector_test

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fieldpass/fieldpass/connector"
)

// TestNetWatcherNotified: in a network namespace of its own, the watcher
// hears of an address added and, with the addresses unchanged, of a default
// route added (the last step of a roam) within 500 ms, although its poll
// would not look for an hour; and it stops with its context.
func TestNetWatcherNotified(t *testing.T) {
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("no ip command (iproute2): %v", err)
	}
	type change struct{ addrs, reason string }
	changes := make(chan change, 16)
	ready := make(chan error, 1)
	var nsFd int
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the runtime ends the thread, and leaves the
		// namespace, with this goroutine. The watcher must run here, as
		// it reads the addresses of its thread's namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ready <- err
			return
		}
		nsFd = fd
		w := connector.NewNetWatcher(time.Hour, slog.New(slog.NewTextHandler(t.Output(), nil)))
		if !w.Notified() {
			ready <- fmt.Errorf("no rtnetlink notifications: the watcher would poll")
			return
		}
		ready <- nil
		w.Run(ctx, func(addrs, reason string) {
			select {
			case changes <- change{addrs, reason}:
			case <-ctx.Done():
			}
		})
	}()
	if err := <-ready; err != nil {
		if strings.HasPrefix(err.Error(), "unshare") {
			t.Skipf("cannot create a network namespace (needs CAP_SYS_ADMIN): %v", err)
		}
		t.Fatal(err)
	}
	defer unix.Close(nsFd)

	expect := func(step, wantReason, wantAddr string) {
		t.Helper()
		start := time.Now()
		select {
		case c := <-changes:
			t.Logf("%s: reported after %s: %s (%s)", step, time.Since(start).Round(time.Millisecond), c.reason, c.addrs)
			if c.reason != wantReason || !strings.Contains(c.addrs, wantAddr) {
				t.Fatalf("%s: got %q with addresses %q, want %q with %s among them", step, c.reason, c.addrs, wantReason, wantAddr)
			}
		case <-time.After(500 * time.Millisecond):
			t.Fatalf("%s: no change reported within 500 ms", step)
		}
	}
	mustIPInNetns(t, nsFd, "addr", "add", "198.51.100.7/24", "dev", "lo")
	expect("address added", "addresses", "198.51.100.7/24")
	mustIPInNetns(t, nsFd, "link", "set", "lo", "up")
	expect("link up", "addresses", "127.0.0.1/8")
	mustIPInNetns(t, nsFd, "route", "add", "default", "via", "198.51.100.1", "dev", "lo")
	expect("default route added", "default route", "198.51.100.7/24")

	// Not a default route: nothing to tell.
	mustIPInNetns(t, nsFd, "route", "add", "203.0.113.0/24", "via", "198.51.100.1", "dev", "lo")
	select {
	case c := <-changes:
		t.Fatalf("other route added: got %q (%s), want nothing", c.reason, c.addrs)
	case <-time.After(100 * time.Millisecond):
	}

	cancel()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("watcher still running 1 s after its context ended")
	}
}

// mustIPInNetns runs ip with args in the network namespace nsFd, from a
// thread that enters it and ends with the command.
func mustIPInNetns(t *testing.T, nsFd int, args ...string) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see TestNetWatcherNotified
		if err := unix.Setns(nsFd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("ip %s: %v", strings.Join(args, " "), err)
	}
}
