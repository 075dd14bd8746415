package brokertest

import (
	"net/netip"
	"os"

	"github.com/fieldpass/fieldpass/broker"
)

// TUNEnv names the environment variable that puts every broker New starts
// on a kernel TUN interface of that name (broker.KernelNetwork) instead of
// the userspace network stack. It needs CAP_NET_ADMIN and a network
// namespace of the test's own (wgtest.RunInNetns): broker's TestKernelTUN
// runs the broker's tests of its network this way.
const TUNEnv = "FIELDPASS_TEST_BROKER_TUN"

// useTUN sets cfg up for TUNEnv, if it is set.
func useTUN(cfg *broker.Config) {
	name := os.Getenv(TUNEnv)
	if name == "" {
		return
	}
	if !cfg.Prefix.IsValid() {
		cfg.Prefix = netip.MustParsePrefix("10.77.0.0/16") // the broker's default
	}
	cfg.NewNetwork = broker.KernelNetwork(name, cfg.Prefix)
}
