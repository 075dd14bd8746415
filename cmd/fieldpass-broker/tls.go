package main

import (
	"crypto/tls"
	"net"
	"net/http"
)

// newTLSListener wraps ln with TLS 1.2+ using the given certificate; the
// http.Server's ReadHeaderTimeout bounds each handshake.
func newTLSListener(ln net.Listener, srv *http.Server, certFile, keyFile string) (net.Listener, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		ln.Close()
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	srv.TLSConfig = cfg
	return tls.NewListener(ln, cfg), nil
}
