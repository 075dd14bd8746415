//go:build linux

package e2e_test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass/wgnet/wgtest"
)

// installDelayRelay puts a wgtest.Relay on the path of every new UDP flow
// that enters ns on interface iif for port, towards target: an nft
// redirect to the relay's socket in ns, whose upstream sockets are opened
// in ns too. Each client gets its upstream socket, so target sees one
// endpoint per device, as behind a NAT. Flows already known to conntrack
// keep their way, so install it before the connectors start.
func installDelayRelay(t testing.TB, ns netns, iif string, port int, target string) *wgtest.Relay {
	t.Helper()
	ln := ns.listenUDP(t, "0.0.0.0:0")
	up, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	r := wgtest.NewRelay(ln, func() (c *net.UDPConn, err error) {
		err = ns.do(func() error {
			c, err = net.DialUDP("udp", nil, up)
			return err
		})
		return c, err
	})
	t.Cleanup(func() { r.Close() })
	ns.nft(t, fmt.Sprintf(`
table ip delayrelay {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname %q udp dport %d redirect to :%d
	}
}
`, iif, port, r.Addr().Port()))
	return r
}

// udpReceiveDrops is the count of datagrams the kernel dropped in ns for
// want of socket buffer space (RcvbufErrors in /proc/net/snmp).
func udpReceiveDrops(t testing.TB, ns netns) int64 {
	t.Helper()
	lines := strings.Split(ns.exec(t, "cat", "/proc/net/snmp"), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "Udp:" || len(values) != len(names) {
			continue
		}
		for j, n := range names {
			if n == "RcvbufErrors" {
				v, _ := strconv.ParseInt(values[j], 10, 64)
				return v
			}
		}
	}
	t.Fatalf("no Udp RcvbufErrors in %s's /proc/net/snmp", ns)
	return 0
}
