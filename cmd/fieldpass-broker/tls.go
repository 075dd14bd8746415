package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/fieldpass/fieldpass/cmd/internal/cliflag"
)

// tlsFlags are serve's HTTPS flags: a certificate from files, or one
// obtained over ACME; neither means plain HTTP (behind a TLS proxy).
type tlsFlags struct {
	cert, key     *string
	acmeDomains   cliflag.Strings
	acmeEmail     *string
	acmeDirectory *string
	acmeCache     *string
	acmeCAFile    *string
}

func addTLSFlags(fset *flag.FlagSet, getenv func(string) string) *tlsFlags {
	f := &tlsFlags{
		cert:          fset.String("tls-cert", "", "TLS certificate `file` (PEM, chain included): serve HTTPS, re-reading the files when they change (no restart); otherwise plain HTTP behind a TLS proxy"),
		key:           fset.String("tls-key", "", "TLS key `file` of --tls-cert"),
		acmeEmail:     fset.String("acme-email", "", "contact `address` given to the ACME CA (expiry and incident notices)"),
		acmeDirectory: fset.String("acme-directory", autocert.DefaultACMEDirectory, "ACME directory `URL` (Let's Encrypt's staging: https://acme-staging-v02.api.letsencrypt.org/directory)"),
		acmeCache: fset.String("acme-cache", filepath.Join(filepath.Dir(defaultKeyFile(getenv)), "acme"),
			"`directory` (created 0700) keeping the ACME account key and the certificates across restarts, so that a restart does not ask the CA again"),
		acmeCAFile: fset.String("acme-ca-file", "", "PEM `file` of the CA(s) to trust for the ACME directory's HTTPS, for a private ACME CA (step-ca, pebble) (default: the system's)"),
	}
	fset.Var(&f.acmeDomains, "acme-domain", "DNS `name` to obtain a certificate for over ACME (TLS-ALPN-01: the CA connects to port 443 of this name, which must reach --http-listen); "+
		"repeatable; the --public-url host must be one of them; instead of --tls-cert")
	return f
}

// check validates the flags after parsing: publicHost is --public-url's
// host name.
func (f *tlsFlags) check(publicHost string) error {
	if (*f.cert == "") != (*f.key == "") {
		return usageError{Msg: "--tls-cert and --tls-key go together"}
	}
	if len(f.acmeDomains) == 0 {
		return nil
	}
	if *f.cert != "" {
		return usageError{Msg: "--acme-domain and --tls-cert exclude each other: a certificate comes from files or from the ACME CA"}
	}
	for i, d := range f.acmeDomains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if d == "" || strings.ContainsAny(d, "/:@* ") || net.ParseIP(d) != nil {
			return usageError{Msg: fmt.Sprintf("--acme-domain %q: want a DNS name such as fieldpass.example.com (no wildcard: TLS-ALPN-01 cannot validate one)", f.acmeDomains[i])}
		}
		f.acmeDomains[i] = d
	}
	if !slices.Contains(f.acmeDomains, strings.ToLower(publicHost)) {
		return usageError{Msg: fmt.Sprintf("--public-url's host %s is not among --acme-domain %s: devices and people would get no certificate for it; add --acme-domain %s",
			publicHost, strings.Join(f.acmeDomains, ","), publicHost)}
	}
	if *f.acmeDirectory == "" {
		return usageError{Msg: "--acme-directory: want the ACME directory URL"}
	}
	return nil
}

// on reports whether the broker serves HTTPS itself.
func (f *tlsFlags) on() bool { return *f.cert != "" || len(f.acmeDomains) > 0 }

// newTLSConfig returns the broker's TLS config (1.2 and later, h2 and
// HTTP/1.1) with its certificate from the files, re-read when they change,
// or from the ACME CA. The http.Server's ReadHeaderTimeout bounds each
// handshake.
func (f *tlsFlags) newTLSConfig(log *slog.Logger) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if *f.cert != "" {
		fc, err := newFileCert(*f.cert, *f.key, time.Second, log)
		if err != nil {
			return nil, err
		}
		cfg.GetCertificate = fc.getCertificate
		log.Info("TLS from files, re-read when they change", "cert", *f.cert, "key", *f.key)
		return cfg, nil
	}
	m, err := f.acmeManager(log)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex // guards the two below
	var lastErr string
	var lastLogged time.Time
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := m.GetCertificate(hello)
		// A name outside --acme-domain is a client's mistake (or a
		// scanner's); the CA failing us is the operator's business, said
		// once a minute rather than at every handshake that waits on it.
		if err != nil && slices.Contains(f.acmeDomains, strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))) {
			mu.Lock()
			if err.Error() != lastErr || time.Since(lastLogged) > time.Minute {
				lastErr, lastLogged = err.Error(), time.Now()
				log.Warn("ACME: no certificate; handshakes for the name fail until the CA issues one", "domain", hello.ServerName, "err", err)
			}
			mu.Unlock()
		}
		return c, err
	}
	// TLS-ALPN-01 is answered on this same listener: the CA's validation
	// connection asks for the acme-tls/1 protocol.
	cfg.NextProtos = append(cfg.NextProtos, acme.ALPNProto)
	log.Info("TLS over ACME (TLS-ALPN-01 on this listener; the CA connects to port 443 of each domain)",
		"domains", strings.Join(f.acmeDomains, ","), "directory", *f.acmeDirectory, "cache", *f.acmeCache)
	return cfg, nil
}

// acmeManager obtains and renews the --acme-domain certificates on demand
// (the first handshake for a name waits for it), keeping them and the
// account key in --acme-cache.
func (f *tlsFlags) acmeManager(log *slog.Logger) (*autocert.Manager, error) {
	client := &acme.Client{DirectoryURL: *f.acmeDirectory, UserAgent: "fieldpass-broker"}
	if *f.acmeCAFile != "" {
		pem, err := os.ReadFile(*f.acmeCAFile)
		if err != nil {
			return nil, fmt.Errorf("--acme-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--acme-ca-file %s: no PEM certificate in it", *f.acmeCAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		client.HTTPClient = &http.Client{Transport: tr, Timeout: time.Minute}
	}
	if err := os.MkdirAll(*f.acmeCache, 0o700); err != nil {
		return nil, fmt.Errorf("--acme-cache: %w", err)
	}
	return &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(f.acmeDomains...),
		Cache:      autocert.DirCache(*f.acmeCache),
		Email:      *f.acmeEmail,
		Client:     client,
	}, nil
}

// fileCert serves the certificate in a pair of files and reloads it when
// either changes (certbot's renewal, a Kubernetes Secret's update): at
// most once per interval, a handshake stats both files, and reads them
// again if either is another file or has another size or time. A pair
// that does not load (the certificate written, the key not yet) keeps the
// previous certificate in service until the next check.
type fileCert struct {
	certFile, keyFile string
	interval          time.Duration
	log               *slog.Logger

	mu      sync.Mutex // guards the fields below
	cert    *tls.Certificate
	stamp   [2]os.FileInfo // of certFile and keyFile when cert was read
	checked time.Time
	failed  [2]os.FileInfo // the stamp that last failed to load, so it is logged once
}

func newFileCert(certFile, keyFile string, interval time.Duration, log *slog.Logger) (*fileCert, error) {
	f := &fileCert{certFile: certFile, keyFile: keyFile, interval: interval, log: log}
	stamp, err := f.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	f.cert, f.stamp, f.checked = &cert, stamp, time.Now()
	return f, nil
}

func (f *fileCert) stat() ([2]os.FileInfo, error) {
	var st [2]os.FileInfo
	for i, p := range []string{f.certFile, f.keyFile} {
		fi, err := os.Stat(p) // follows symlinks, which certbot and Secrets swap
		if err != nil {
			return st, fmt.Errorf("tls: %w", err)
		}
		st[i] = fi
	}
	return st, nil
}

func sameStamp(a, b [2]os.FileInfo) bool {
	for i := range a {
		if a[i] == nil || b[i] == nil || !os.SameFile(a[i], b[i]) || a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()) {
			return false
		}
	}
	return true
}

func (f *fileCert) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.checked) >= f.interval {
		f.checked = now
		f.reload()
	}
	return f.cert, nil
}

// reload reads the files again if they changed; f.mu is held.
func (f *fileCert) reload() {
	stamp, err := f.stat()
	if err != nil {
		f.log.Warn("TLS files unreadable; serving the certificate read before", "err", err)
		return
	}
	if sameStamp(stamp, f.stamp) || sameStamp(stamp, f.failed) {
		return
	}
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		f.failed = stamp
		f.log.Warn("TLS files changed but do not load; serving the certificate read before", "cert", f.certFile, "key", f.keyFile, "err", err)
		return
	}
	f.cert, f.stamp, f.failed = &cert, stamp, [2]os.FileInfo{}
	attrs := []any{"cert", f.certFile}
	if leaf := cert.Leaf; leaf != nil {
		attrs = append(attrs, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
	}
	f.log.Info("TLS certificate reloaded", attrs...)
}

// newTLSListener wraps ln with the TLS of cfg, and gives srv the same
// config (for HTTP/2).
func newTLSListener(ln net.Listener, srv *http.Server, cfg *tls.Config) net.Listener {
	srv.TLSConfig = cfg
	return tls.NewListener(ln, cfg)
}

// plainHTTPWarning warns when the broker serves plain HTTP on an address
// other than loopback: that is for a TLS proxy in front of it, never for
// devices or people directly (their clients refuse http:// to anything
// but loopback anyway).
func plainHTTPWarning(ln net.Listener, log *slog.Logger) {
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok || addr.IP.IsLoopback() {
		return
	}
	log.Warn("serving plain HTTP on a non-loopback address: only for a TLS proxy in front; give --tls-cert/--tls-key or --acme-domain to serve HTTPS here",
		"http", addr.String())
}
