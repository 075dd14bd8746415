// Package cafile makes the HTTPS client of a command trust a private
// certificate authority as well as the system's: brokers inside a company
// often serve a certificate from an internal CA, and SSL_CERT_FILE (Go's
// own knob) replaces the system roots instead of adding to them, and is
// nowhere a person would look.
package cafile

import (
	"crypto/tls"
	"net/http"
	"time"

	"github.com/fieldpass/fieldpass/cmd/internal/capool"
)

// HTTPClient returns an HTTP client with timeout that trusts the PEM
// certificates in path besides the system's roots, and follows no
// redirect (the broker's API never redirects; one answered by something in
// between must fail, not be followed with credentials). path "" returns
// nil: the caller's default client.
func HTTPClient(path string, timeout time.Duration) (*http.Client, error) {
	if path == "" {
		return nil, nil
	}
	pool, err := capool.Load(path)
	if err != nil {
		return nil, err
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{
		Transport: t,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}
