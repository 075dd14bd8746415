package main

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// hardenFlags are serve's limits from issue 10 ("Hardening"), kept
// together so that serve.go only passes them on.
type hardenFlags struct {
	maxStreamsPerSession *int
	trustedProxies       prefixesFlag
	proxyProtocol        *bool
	rolesMaxAge          *time.Duration
}

func addHardenFlags(fset *flag.FlagSet) *hardenFlags {
	h := &hardenFlags{
		rolesMaxAge: fset.Duration("roles-max-age", 24*time.Hour, "refuse a login's tokens once its roles were read from the identity provider longer ago than this: "+
			"the person logs in again, and a role removed there is gone by then (0: off)"),
		maxStreamsPerSession: fset.Int("max-streams-per-session", 64, "streams (connections to the device's service) one person's session may carry at once (1 to 10000)"),
	}
	h.proxyProtocol = fset.Bool("proxy-protocol", false, "the --trusted-proxy addresses are TCP load balancers speaking the PROXY protocol (v1 or v2): their connections must start with its header, which names the client; "+
		"other peers' headers are ignored")
	fset.Var(&h.trustedProxies, "trusted-proxy", "`CIDR` of a reverse proxy whose Forwarded or X-Forwarded-For header names the client (repeatable; default: none, the TCP peer is the client). "+
		"Behind a proxy without it, every client shares the proxy's address and its limits")
	return h
}

// check validates the flags after parsing.
func (h *hardenFlags) check() error {
	if n := *h.maxStreamsPerSession; n < 1 || n > 10000 {
		return fmt.Errorf("--max-streams-per-session %d: want 1 to 10000", n)
	}
	if *h.proxyProtocol && len(h.trustedProxies) == 0 {
		return fmt.Errorf("--proxy-protocol needs the load balancers' addresses: --trusted-proxy CIDR")
	}
	if *h.rolesMaxAge < 0 {
		return fmt.Errorf("--roles-max-age %s: want 0 (off) or more", *h.rolesMaxAge)
	}
	return nil
}

// apiRolesMaxAge is --roles-max-age as apiserver.Config takes it, where
// zero means the default.
func (h *hardenFlags) apiRolesMaxAge() time.Duration {
	if *h.rolesMaxAge == 0 {
		return -1
	}
	return *h.rolesMaxAge
}

// prefixesFlag is a repeatable CIDR flag; a bare address is its own /32
// or /128.
type prefixesFlag []netip.Prefix

func (p *prefixesFlag) String() string {
	s := make([]string, len(*p))
	for i, x := range *p {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

func (p *prefixesFlag) Set(v string) error {
	if a, err := netip.ParseAddr(v); err == nil {
		*p = append(*p, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		return nil
	}
	x, err := netip.ParsePrefix(v)
	if err != nil {
		return fmt.Errorf("want a CIDR such as 127.0.0.1/32 or 10.0.0.0/8")
	}
	*p = append(*p, x.Masked())
	return nil
}
