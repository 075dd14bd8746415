package ratelimit_test

import (
	"bufio"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"

	"github.com/fieldpass/fieldpass/ratelimit"
)

// serveRemoteAddr serves, behind ProxyProtocol with trusted, an HTTP
// handler that answers the request's remote address.
func serveRemoteAddr(t *testing.T, trusted ...netip.Prefix) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pln, err := ratelimit.ProxyProtocol(ln, trusted)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(r.RemoteAddr)) })}
	go srv.Serve(pln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// ask sends a PROXY v2 header claiming source, if any, then a GET, and
// returns what the server saw as the remote address.
func ask(t *testing.T, addr, source string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if source != "" {
		h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(source)), c.RemoteAddr())
		if _, err := h.WriteTo(c); err != nil {
			t.Fatal(err)
		}
	}
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "refused: " + err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	return b.String()
}

func TestProxyProtocol(t *testing.T) {
	// The load balancer (here: loopback) is trusted: its header names the
	// client.
	lb := serveRemoteAddr(t, netip.MustParsePrefix("127.0.0.0/8"))
	if got := ask(t, lb, "203.0.113.7:40000"); got != "203.0.113.7:40000" {
		t.Errorf("through the trusted balancer: remote %q, want the header's client", got)
	}
	// A trusted balancer must send the header.
	if got := ask(t, lb, ""); !strings.HasPrefix(got, "refused") {
		t.Errorf("a trusted peer without a header was served as %q", got)
	}
	// Anyone else cannot claim an address: the header is read and ignored.
	other := serveRemoteAddr(t, netip.MustParsePrefix("192.0.2.0/24"))
	if got := ask(t, other, "203.0.113.7:40000"); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("an untrusted peer's header was believed: remote %q", got)
	}
	if got := ask(t, other, ""); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("an untrusted peer without a header: remote %q", got)
	}
	if _, err := ratelimit.ProxyProtocol(nil, nil); err == nil {
		t.Error("the PROXY protocol without trusted balancers was accepted")
	}
}
