package ratelimit

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// ProxyProtocol wraps ln for a TCP load balancer that speaks the PROXY
// protocol (v1 or v2): connections from the trusted prefixes must begin
// with its header, whose source becomes the connection's remote address
// (and so the client address every limit and record uses); from anywhere
// else the header, if any, is read and its address ignored, so nobody
// outside them can claim an address. Wrap before TLS: the header comes
// first on the wire.
func ProxyProtocol(ln net.Listener, trusted []netip.Prefix) (net.Listener, error) {
	if len(trusted) == 0 {
		return nil, fmt.Errorf("the PROXY protocol needs the load balancers' addresses (--trusted-proxy)")
	}
	ranges := make([]string, len(trusted))
	for i, p := range trusted {
		ranges[i] = p.Masked().String()
	}
	policy, err := proxyproto.PolicyFromRanges(ranges, proxyproto.REQUIRE, proxyproto.IGNORE)
	if err != nil {
		return nil, err
	}
	return &proxyproto.Listener{Listener: ln, ConnPolicy: policy, ReadHeaderTimeout: 5 * time.Second}, nil
}
