package main

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/wgnet"
)

// addTUNFlag registers --tun: the broker's kernel TUN mode (wgnet.KernelDevice).
func addTUNFlag(fs *flag.FlagSet) *string {
	return fs.String("tun", "", "run WireGuard on a kernel TUN interface of this `NAME` (e.g. fieldpass0), created at start and removed at stop, "+
		"with the kernel's TCP inside the tunnel: faster, but needs CAP_NET_ADMIN and /dev/net/tun; "+
		"the interface lets devices reach only the broker's tunnel port (default: the rootless userspace network stack)")
}

// checkTUNName checks --tun's value: a Linux interface name.
func checkTUNName(name string) error {
	if name == "" {
		return nil
	}
	if len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return usageError{Msg: fmt.Sprintf("--tun %q: want an interface name of at most 15 characters, without '/', ':' or spaces, such as fieldpass0", name)}
	}
	return nil
}

// tunNetwork is broker.Config.NewNetwork for --tun NAME; nil, the default
// userspace network, without it.
func tunNetwork(name string, prefix netip.Prefix) func(wgnet.Config) (broker.Network, error) {
	if name == "" {
		return nil
	}
	kernel := broker.KernelNetwork(name, prefix)
	return func(wc wgnet.Config) (broker.Network, error) {
		n, err := kernel(wc)
		if err != nil {
			return nil, fmt.Errorf("--tun %s: %w (without --tun the broker needs no privilege: it runs its own userspace network stack)", name, err)
		}
		return n, nil
	}
}
