package ratelimit

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies decides the client address of requests that come through
// reverse proxies the operator trusts (serve --trusted-proxy). Only a
// trusted peer's Forwarded (RFC 7239) or X-Forwarded-For header is read;
// from anyone else a header is a forgery, and ignored. Behind the shipped
// deployment (a TLS proxy on the same host) without it, every client would
// share the proxy's address, and its limits.
type Proxies struct {
	trusted []netip.Prefix
}

// NewProxies returns the proxies in trusted (none: trust no header).
func NewProxies(trusted []netip.Prefix) *Proxies {
	p := &Proxies{}
	for _, t := range trusted {
		p.trusted = append(p.trusted, t.Masked())
	}
	return p
}

func (p *Proxies) trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, t := range p.trusted {
		if t.Contains(a) {
			return true
		}
	}
	return false
}

type clientKey struct{}

// Handler decides each request's client address once, before next sees
// it; ClientAddr returns it.
func (p *Proxies) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := p.clientAddr(r)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientKey{}, addr)))
	})
}

// clientAddr walks the proxies' chain from the nearest hop back: each
// trusted hop vouches for the one before it, and the first hop not trusted
// is the client. A chain that cannot be read stops the walk at the last
// hop vouched for.
func (p *Proxies) clientAddr(r *http.Request) string {
	peer := peerAddr(r)
	a, err := netip.ParseAddr(peer)
	if err != nil || len(p.trusted) == 0 || !p.trusts(a) {
		return peer
	}
	hops := forwardedFor(r.Header)
	client := a.Unmap()
	for i := len(hops) - 1; i >= 0; i-- {
		h, ok := parseHop(hops[i])
		if !ok {
			break
		}
		client = h
		if !p.trusts(h) {
			break
		}
	}
	return client.String()
}

// forwardedFor returns the client chain the proxies reported, nearest
// last: Forwarded's for= parameters when there is a Forwarded header,
// else X-Forwarded-For's entries.
func forwardedFor(h http.Header) []string {
	var hops []string
	if fw := h.Values("Forwarded"); len(fw) > 0 {
		for _, line := range fw {
			for _, elem := range strings.Split(line, ",") {
				found := ""
				for _, pair := range strings.Split(elem, ";") {
					k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
					if ok && strings.EqualFold(k, "for") {
						found = v
					}
				}
				hops = append(hops, found) // "" stops the walk there
			}
		}
		return hops
	}
	for _, line := range h.Values("X-Forwarded-For") {
		for _, v := range strings.Split(line, ",") {
			hops = append(hops, v)
		}
	}
	return hops
}

// parseHop reads one hop: an IP address, maybe quoted, bracketed, or with
// a port. "unknown" and obfuscated identifiers are no address.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func peerAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return host
}

// ClientAddr is the request's client address: the one Proxies.Handler
// decided, or, for a request that did not pass through it, the TCP peer's.
// It is what sessions, audit events and limits record, and the only place
// that decides it.
func ClientAddr(r *http.Request) string {
	if a, ok := r.Context().Value(clientKey{}).(string); ok {
		return a
	}
	return peerAddr(r)
}

// ClientKey is the limiter key of a client address: an IPv6 address
// counts by its /64, which one subscriber is routinely given whole, so
// that 1,000 addresses of one network share one bucket.
func ClientKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is6() || a.Is4In6() {
		return addr
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}
