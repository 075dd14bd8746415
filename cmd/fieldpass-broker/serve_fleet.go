package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/brokerlink"
)

// fleetFlags make a broker one of several sharing one database (docs/
// DESIGN.md, "Several brokers"): the device leases, the broker roll, and
// the mutual-TLS link that carries a person's connect to the broker
// holding the device.
type fleetFlags struct {
	listen, addr, cert, key, ca *string
	leaseTTL                    *time.Duration
}

func addFleetFlags(fs *flag.FlagSet) fleetFlags {
	return fleetFlags{
		listen: fs.String("peer-listen", "", "TCP `address` of the link other brokers of the fleet use (mutual TLS); setting it makes this broker one of several sharing the database (default: off, the broker works alone)"),
		addr:   fs.String("peer-addr", "", "`host:port` at which the other brokers reach --peer-listen (default: --peer-listen when it names a host)"),
		cert:   fs.String("peer-cert", "", "this broker's certificate `file` (PEM) for the link, signed by --peer-ca, valid for client and server auth"),
		key:    fs.String("peer-key", "", "the private key `file` (PEM) of --peer-cert"),
		ca:     fs.String("peer-ca", "", "the fleet CA's certificate `file` (PEM): only brokers it signed may link"),
		leaseTTL: fs.Duration("lease-ttl", 15*time.Second,
			"with --peer-listen: how long a device's lease lasts unrenewed; a broker cut off loses its devices to another this long after its last renewal (3s to 5m)"),
	}
}

func (f fleetFlags) on() bool { return *f.listen != "" }

// check validates the flags; it returns the address the others reach this
// broker at.
func (f fleetFlags) check() (string, error) {
	if !f.on() {
		for name, v := range map[string]string{"--peer-addr": *f.addr, "--peer-cert": *f.cert, "--peer-key": *f.key, "--peer-ca": *f.ca} {
			if v != "" {
				return "", usageError{Msg: name + " needs --peer-listen"}
			}
		}
		return "", nil
	}
	if *f.cert == "" || *f.key == "" || *f.ca == "" {
		return "", usageError{Msg: "--peer-listen needs --peer-cert, --peer-key and --peer-ca: brokers link only with mutual TLS"}
	}
	if *f.leaseTTL < 3*time.Second || *f.leaseTTL > 5*time.Minute {
		return "", usageError{Msg: fmt.Sprintf("--lease-ttl %s: want 3s to 5m (default 15s)", *f.leaseTTL)}
	}
	addr := *f.addr
	if addr == "" {
		host, _, err := net.SplitHostPort(*f.listen)
		if err != nil || host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
			return "", usageError{Msg: fmt.Sprintf("--peer-addr is needed: --peer-listen %q names no host the other brokers can reach", *f.listen)}
		}
		addr = *f.listen
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", usageError{Msg: fmt.Sprintf("--peer-addr %q: want host:port", addr)}
	}
	return addr, nil
}

// tlsConfigs loads the link's certificate and CA into the server's and the
// dialer's TLS configurations.
func (f fleetFlags) tlsConfigs() (server, client *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(*f.cert, *f.key)
	if err != nil {
		return nil, nil, fmt.Errorf("--peer-cert/--peer-key: %w", err)
	}
	pem, err := os.ReadFile(*f.ca)
	if err != nil {
		return nil, nil, fmt.Errorf("--peer-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("--peer-ca %s: no PEM certificate in it", *f.ca)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}
	return server, client, nil
}

// fleet is the running side of the flags: the dialer of links, and the
// link's listener and server.
type fleet struct {
	addr   string
	ln     net.Listener
	server *brokerlink.Server
}

// fleetConfig loads the link's certificates: the broker's side of the
// fleet, and the TLS configuration of the link's server.
func (s *server) fleetConfig(f fleetFlags, addr string) (*broker.FleetConfig, *tls.Config, error) {
	serverTLS, clientTLS, err := f.tlsConfigs()
	if err != nil {
		return nil, nil, err
	}
	links, err := brokerlink.NewDialer(clientTLS)
	if err != nil {
		return nil, nil, err
	}
	s.closers = append(s.closers, links.Close)
	return &broker.FleetConfig{LeaseTTL: *f.leaseTTL, PeerAddr: addr, Links: links}, serverTLS, nil
}

// startFleet listens for links; sessions answers the connects other
// brokers carry here.
func (s *server) startFleet(f fleetFlags, addr string, serverTLS *tls.Config) (*fleet, error) {
	srv, err := brokerlink.NewServer(s.sessions, serverTLS, s.log.With("component", "brokerlink"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", *f.listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", *f.listen, err)
	}
	s.closers = append(s.closers, func() { ln.Close() })
	s.log.Info("one of a fleet of brokers", "peer_listen", ln.Addr().String(), "peer_addr", addr, "lease_ttl", fieldpass.FormatDuration(*f.leaseTTL))
	return &fleet{addr: addr, ln: ln, server: srv}, nil
}
