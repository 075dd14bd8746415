//go:build linux

package e2e_test

import (
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// TestDisableEnable: an operator disables a connected device with the CLI;
// the running broker drops it within a couple of seconds and keeps it out;
// enabling lets the untouched connector back in.
func TestDisableEnable(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	stateDir := b.enroll("cam-3")
	c := startConnector(t, "cam-3", stateDir, "--service", "web="+echoService(t), "--max-backoff", "2s")
	b.waitDevice("cam-3", 20*time.Second, "online with an endpoint", isOnlineWithEndpoint)

	// The command returns once the change is committed; the broker hears
	// of it through LISTEN/NOTIFY.
	if out := b.mustCLI("device", "disable", "cam-3"); out != "device cam-3 is now disabled\n" {
		t.Errorf("disable printed %q", out)
	}
	d, took := b.waitDevice("cam-3", 2*time.Second, "offline", isOffline)
	t.Logf("offline %s after `device disable` returned", took.Round(time.Millisecond))
	if d.State != fieldpass.DeviceDisabled {
		t.Errorf("state = %s, want disabled", d.State)
	}
	c.waitLog(t, 5*time.Second, regexp.MustCompile(`broker session ended`))

	// Kept out: with --max-backoff 2s the connector tries several times in
	// this window, and must neither get in nor give up.
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if d, _ := b.device("cam-3"); d.Presence.Online {
			t.Fatalf("a disabled device came back online")
		}
		if c.exited() {
			t.Fatalf("the connector gave up while disabled: %v", c.err)
		}
	}

	if out := b.mustCLI("device", "enable", "cam-3"); out != "device cam-3 is now active\n" {
		t.Errorf("enable printed %q", out)
	}
	d, took = b.waitDevice("cam-3", 30*time.Second, "online", isOnline)
	t.Logf("back online %s after `device enable` returned", took.Round(time.Millisecond))
	if d.State != fieldpass.DeviceActive {
		t.Errorf("state = %s, want active", d.State)
	}
}

// TestDisableRightAfterConnect: a device disabled in its first seconds
// online, before the broker has read its endpoint from WireGuard, must go
// offline all the same.
func TestDisableRightAfterConnect(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	stateDir := b.enroll("cam-4")
	startConnector(t, "cam-4", stateDir, "--service", "web="+echoService(t), "--max-backoff", "2s")
	b.waitDevice("cam-4", 20*time.Second, "online", isOnline)
	b.mustCLI("device", "disable", "cam-4")
	_, took := b.waitDevice("cam-4", 2*time.Second, "offline", isOffline)
	t.Logf("offline %s after `device disable` returned", took.Round(time.Millisecond))
}

// TestBrokerRestart: the broker dies (SIGKILL) and comes back on the same
// ports and key; the connector, untouched, is online again. Then the same
// for a graceful stop (SIGTERM).
func TestBrokerRestart(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	stateDir := b.enroll("rtu-9")
	c := startConnector(t, "rtu-9", stateDir, "--service", "ssh="+echoService(t), "--max-backoff", "2s")
	b.waitDevice("rtu-9", 20*time.Second, "online with an endpoint", isOnlineWithEndpoint)

	for _, tc := range []struct {
		name    string
		sig     syscall.Signal
		timeout time.Duration
	}{
		{"SIGKILL", syscall.SIGKILL, 30 * time.Second},
		{"SIGTERM", syscall.SIGTERM, 60 * time.Second},
	} {
		stopped := time.Now()
		if err := b.p.signal(tc.sig, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		stopTook := time.Since(stopped)
		if tc.sig == syscall.SIGTERM {
			// A graceful stop marks the broker's devices offline itself.
			if d, _ := b.device("rtu-9"); d.Presence.Online {
				t.Errorf("%s: device still listed online after the broker stopped", tc.name)
			}
		}
		restarted := b.restart()
		// A device is back when the new broker process has written its
		// presence: online, last seen after the restart.
		d, took := b.waitDevice("rtu-9", tc.timeout, "back online", func(d fieldpass.Device) bool {
			return d.Presence.Online && d.Presence.LastSeen.After(restarted)
		})
		t.Logf("%s: broker stopped in %s; connector back online %s after the broker was started again (endpoint %s)",
			tc.name, stopTook.Round(time.Millisecond), took.Round(time.Millisecond), d.Presence.Endpoint)
		if c.exited() {
			t.Fatalf("%s: the connector exited: %v", tc.name, c.err)
		}
	}
}
