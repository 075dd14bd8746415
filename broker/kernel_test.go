package broker_test

import (
	"net"
	"os"
	"testing"

	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/wgnet/wgtest"
)

// TestKernelTUN runs the broker's tests of what it does through its network
// (a device connects and streams to its services; a session; presence read
// from the tunnel; a restarted broker nudging its devices back; enrolment
// inside the tunnel; a device's reach) again with the broker on a kernel
// TUN interface, in a network namespace of the test's own.
func TestKernelTUN(t *testing.T) {
	if wgtest.InNetns() {
		t.Skip("the parent test") // selected by name below, it never is
	}
	wgtest.RunInNetns(t, []string{"-test.count=1", "-test.run=^(" +
		"TestStreamToAllowlistedService|TestSessionStreamsAreCounted|TestCleanStopGoesOfflineAtOnce|" +
		"TestSilenceJudgedByDeviceKeepalive|TestBrokerRestartReconnects|TestEnrollInTunnel|" +
		"TestHelloMustMatchTunnelIdentity|TestTUNDeviceReach)$"},
		brokertest.TUNEnv+"=fptest0")
}

// TestTUNDeviceReach is TestDeviceReachesOnlyTheTunnelPort on a kernel TUN
// interface, on a host that forwards IP packets (as hosts running
// containers do) and has services of its own on the ports the device tries,
// on every address: none answers the device.
func TestTUNDeviceReach(t *testing.T) {
	if os.Getenv(brokertest.TUNEnv) == "" {
		t.Skip("runs inside TestKernelTUN")
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"22", "80", "443", "7071", "8080", "9090"} {
		ln, err := net.Listen("tcp", ":"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	TestDeviceReachesOnlyTheTunnelPort(t)
}
