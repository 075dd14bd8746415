package fieldpass

import (
	"net"
	"net/url"
	"strings"
)

// IsLoopbackHost reports whether host (a name or an IP, no port) is this
// machine: "localhost" or a loopback address. It is the one place that
// decides where plain http is acceptable.
func IsLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// httpOnLoopback completes the refusal of a malformed broker URL: a person
// who typed host:port for a local broker learns what to type instead.
const httpOnLoopback = ", or http://127.0.0.1:PORT for a broker on this machine"

// ParseBrokerURL checks the URL people and devices use to reach a broker:
// http or https, a host, no credentials, query or fragment, and plain http
// only to a loopback broker (tokens and keys must not cross a network in
// clear). The path loses its trailing slash so endpoints can be joined.
func ParseBrokerURL(raw string) (*url.URL, error) {
	if host, port, err := net.SplitHostPort(raw); err == nil && !strings.ContainsAny(raw, "/@") && host != "" && port != "" {
		// host:port without a scheme: say which one to put in front.
		if IsLoopbackHost(host) {
			return nil, Errorf(EINVALID, "invalid broker URL %q: it needs a scheme: http://%s (plain http is fine for a broker on this machine; https for any other)", raw, raw)
		}
		return nil, Errorf(EINVALID, "invalid broker URL %q: it needs a scheme: https://%s (plain http only to a broker on this machine)", raw, raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// The text may hold a password; say nothing of it.
		return nil, Errorf(EINVALID, "invalid broker URL: want https://host[:port]%s", httpOnLoopback)
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, Errorf(EINVALID, "invalid broker URL %q: want https://host[:port]%s", u.Redacted(), httpOnLoopback)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, Errorf(EINVALID, "invalid broker URL %q: no credentials, query or fragment", u.Redacted())
	}
	if u.Scheme == "http" && !IsLoopbackHost(u.Hostname()) {
		return nil, Errorf(EINVALID, "refusing plain http to %s: use https (http is accepted only for a loopback broker)", u.Host)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}
