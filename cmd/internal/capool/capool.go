// Package capool reads a --ca-file: a private certificate authority to
// trust besides the system's roots. It is apart from cafile, which builds
// an HTTP client on it, so that the connector, which speaks HTTPS without
// net/http (connector/enroll.go), links no net/http through it.
package capool

import (
	"crypto/x509"
	"fmt"
	"os"
)

// Load returns the system's roots and the PEM certificates in path; path
// "" returns nil, which crypto/tls reads as the system's roots.
func Load(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate: give the CA's certificate (BEGIN CERTIFICATE)", path)
	}
	return pool, nil
}
