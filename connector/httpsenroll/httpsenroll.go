// Package httpsenroll enrols a connector over HTTPS, as connectors before
// enrolment inside WireGuard did (see connector.EnrollInTunnel). The
// connector binary links it only when built with -tags enroll_https: it
// brings crypto/tls and crypto/x509, 1.8-2.0 MB, into a binary that must
// fit a router's flash.
package httpsenroll

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// Config is the input of Enroll. Zero values mean the defaults.
type Config struct {
	BrokerURL string // https://broker.example.com; http only for loopback
	Token     string // single-use enrolment token (fpe_...)
	StateDir  string
	// RootCAs are the certificate authorities trusted for the broker's
	// certificate (default: the system's).
	RootCAs *x509.CertPool
	// Timeout bounds the whole exchange with the broker (default 30 s).
	Timeout time.Duration
	// Rand is the key source; crypto/rand by default.
	Rand io.Reader
}

// Enroll generates the device's WireGuard key pair on the device, registers
// the public key with the broker, and writes the state. The private key never
// leaves the device. On any error nothing is written; an existing enrolment in
// StateDir is never overwritten.
func Enroll(ctx context.Context, cfg Config) (*connector.State, error) {
	if err := fieldpass.CheckEnrollmentToken(cfg.Token); err != nil {
		return nil, err
	}
	base, err := fieldpass.ParseBrokerURL(cfg.BrokerURL)
	if err != nil {
		return nil, err
	}
	if err := connector.CheckStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	rnd := cfg.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	priv, err := wgnet.GenerateKey(rnd)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	body, _ := json.Marshal(tunnel.EnrollRequest{Token: cfg.Token, PublicKey: priv.Public().String(), ConnectorVersion: fieldpass.Version})
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := postJSON(ctx, base.JoinPath(tunnel.EnrollPath), body, cfg.RootCAs)
	if err != nil {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "cannot reach broker at %s: %w", base.Redacted(), err)
	}
	if resp.status != 200 {
		var e tunnel.ErrorResponse
		if json.Unmarshal(resp.body, &e) == nil && e.Message != "" {
			return nil, fieldpass.Errorf(e.Code, "%s", e.Message)
		}
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "broker answered %s", resp.statusLine)
	}
	rb := resp.body
	var er tunnel.EnrollResponse
	if err := json.Unmarshal(rb, &er); err != nil {
		return nil, fmt.Errorf("decode broker answer: %w", err)
	}
	s := &connector.State{
		BrokerURL:  base.String(),
		DeviceID:   er.DeviceID,
		DeviceName: er.DeviceName,
		BrokerPort: er.BrokerPort,
		BrokerKey:  er.BrokerKey,
		Endpoints:  er.Endpoints,
		MTU:        er.MTU,
		PrivateKey: priv,
	}
	if s.TunnelAddress, err = netip.ParseAddr(er.TunnelAddress); err != nil {
		return nil, fmt.Errorf("broker sent a bad tunnel address: %w", err)
	}
	if s.BrokerAddress, err = netip.ParseAddr(er.BrokerAddress); err != nil {
		return nil, fmt.Errorf("broker sent a bad broker address: %w", err)
	}
	if err := s.Save(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("enrolled as %s but could not save the state (decommission the device and enrol again): %w", s.DeviceName, err)
	}
	return s, nil
}

// The one HTTP exchange of a connector's life, its enrolment, is made here
// on crypto/tls and net/textproto rather than net/http: net/http (client,
// transport, HTTP/2, proxies, cookies) is about a fifth of the connector's
// binary, which must fit in a router's flash (issue 13), for one POST.
// What is left to do by hand is small and bounded, and done as the RFCs
// say:
//   - the request is HTTP/1.0 with a Content-Length, so no server or proxy
//     may answer with a transfer coding (RFC 9112 §6.1: Transfer-Encoding
//     only to a request of HTTP/1.1 or later): the body is Content-Length
//     bytes, or up to the close;
//   - the status line and headers are read by net/textproto, the same
//     reader net/http uses; the answer is limited to 64 KiB;
//   - no redirect is followed (the broker never redirects; one from
//     something in between must fail, not carry the token elsewhere), no
//     proxy is used (a device that needs an HTTP proxy cannot carry
//     WireGuard's UDP either), and the connection is not reused.
// TLS is crypto/tls with the system's roots or RootCAs, at least TLS 1.2,
// the host name checked as net/http would.

// maxAnswer bounds what is read of the broker's answer.
const maxAnswer = 64 << 10

type httpAnswer struct {
	status     int
	statusLine string // "403 Forbidden"
	body       []byte
}

// postJSON POSTs body to u (https, or http on loopback as ParseBrokerURL
// allows) and returns the answer. ctx bounds the whole exchange.
func postJSON(ctx context.Context, u *url.URL, body []byte, roots *x509.CertPool) (*httpAnswer, error) {
	host := u.Hostname()
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, unwrapOpError(err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Closing the connection is how a cancelled ctx stops a read or write.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if u.Scheme == "https" {
		tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		conn = tc
	}
	target := u.RequestURI()
	if !strings.HasPrefix(target, "/") {
		target = "/" + target // JoinPath on a URL without a path leaves none
	}
	var req bytes.Buffer
	fmt.Fprintf(&req, "POST %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: fieldpass-connector/%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		target, u.Host, fieldpass.Version, len(body))
	req.Write(body)
	if _, err := conn.Write(req.Bytes()); err != nil {
		return nil, ctxErr(ctx, err)
	}
	tp := textproto.NewReader(bufio.NewReader(io.LimitReader(conn, 2*maxAnswer)))
	line, err := tp.ReadLine()
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("read answer: %w", err))
	}
	proto, status, ok := strings.Cut(line, " ")
	code, _, _ := strings.Cut(status, " ")
	n, err := strconv.Atoi(code)
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") || err != nil || len(code) != 3 {
		return nil, fmt.Errorf("not an HTTP answer: %.40q", line)
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("read answer headers: %w", err))
	}
	if te := hdr.Get("Transfer-Encoding"); te != "" {
		return nil, fmt.Errorf("answer with transfer coding %q to an HTTP/1.0 request", te)
	}
	body, err = readBody(tp.R, hdr.Get("Content-Length"))
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	return &httpAnswer{status: n, statusLine: status, body: body}, nil
}

// readBody reads an answer's body: Content-Length bytes if given, else to
// the close; at most maxAnswer.
func readBody(r io.Reader, contentLength string) ([]byte, error) {
	if contentLength == "" {
		b, err := io.ReadAll(io.LimitReader(r, maxAnswer+1))
		if err != nil {
			return nil, fmt.Errorf("read answer: %w", err)
		}
		if len(b) > maxAnswer {
			return nil, fmt.Errorf("answer longer than %d bytes", maxAnswer)
		}
		return b, nil
	}
	n, err := strconv.ParseUint(contentLength, 10, 32)
	if err != nil || n > maxAnswer {
		return nil, fmt.Errorf("answer of bad or excessive length %.20q", contentLength)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	return b, nil
}

// ctxErr prefers the context's reason: a deadline closes the connection,
// and "use of closed network connection" would hide it.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// unwrapOpError drops the *net.OpError wrapping, whose text repeats the
// addresses the message already names.
func unwrapOpError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}
