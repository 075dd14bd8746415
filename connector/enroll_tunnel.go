package connector

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// TunnelEnrollConfig is the input of EnrollInTunnel: the token and what
// the operator's enrol command carries beside it. Zero values of the
// optional fields mean the defaults.
type TunnelEnrollConfig struct {
	Token string // single-use enrolment token (fpe_...)
	// BrokerKey is the broker's WireGuard public key (base64).
	BrokerKey string
	// Endpoint is the broker's UDP address, host:port.
	Endpoint string
	// Address is the token's tunnel address with the length of the
	// broker's tunnel prefix (10.77.255.254/16): the token's peer sends
	// from it, and the broker is the prefix's first host.
	Address  netip.Prefix
	StateDir string
	// Timeout bounds the whole exchange with the broker (default 60 s:
	// WireGuard retries a lost handshake after 5 s).
	Timeout time.Duration
	// ListenAddr is the local UDP address (default: any).
	ListenAddr netip.AddrPort
	// Rand is the key source; crypto/rand by default.
	Rand io.Reader
}

// EnrollInTunnel enrols the device inside WireGuard, with no TLS: it brings
// up a temporary WireGuard device with the key pair the token stands for
// (fieldpass.EnrollmentKey), which the broker admits as a peer that reaches
// only the enrolment exchange; through it, it sends the public half of the
// device's own fresh key pair and reads the device's identity and how to
// reach the broker, and writes the state. The private key never leaves the
// device; nobody without the token can complete the handshake. On any
// error nothing is written; an existing enrolment in StateDir is never
// overwritten.
func EnrollInTunnel(ctx context.Context, cfg TunnelEnrollConfig) (*State, error) {
	if err := fieldpass.CheckEnrollmentToken(cfg.Token); err != nil {
		return nil, err
	}
	brokerKey, err := wgnet.ParseKey(cfg.BrokerKey)
	if err != nil {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid --broker-key: %v (copy it from the enrol command the broker printed)", err)
	}
	if _, _, ok := strings.Cut(cfg.Endpoint, ":"); !ok {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid --endpoint %q: want the broker's WireGuard host:port", cfg.Endpoint)
	}
	if !cfg.Address.IsValid() {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "--address is required: the token's tunnel address with its prefix length, from the enrol command")
	}
	if err := CheckStateDir(cfg.StateDir); err != nil {
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
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ep, err := resolveEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "cannot resolve the broker's endpoint %s: %v", cfg.Endpoint, err)
	}

	tokenPriv, _ := fieldpass.EnrollmentKey(cfg.Token)
	self := cfg.Address.Addr().Unmap()
	brokerAddr := fieldpass.BrokerTunnelAddress(cfg.Address)
	dev, err := wgnet.New(wgnet.Config{PrivateKey: wgnet.Key(tokenPriv), Address: self, ListenAddr: cfg.ListenAddr, SmallDevice: true})
	if err != nil {
		return nil, fmt.Errorf("start wireguard: %w", err)
	}
	defer dev.Close()
	if err := dev.SetPeer(wgnet.Peer{
		PublicKey:  brokerKey,
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(brokerAddr, brokerAddr.BitLen())},
		Endpoint:   ep,
	}); err != nil {
		return nil, fmt.Errorf("set broker peer: %w", err)
	}
	answer, err := askInTunnel(ctx, dev, netip.AddrPortFrom(brokerAddr, tunnel.BrokerPort), tunnel.EnrollAsk{PublicKey: priv.Public(), ConnectorVersion: fieldpass.Version})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "no answer from the broker at %s inside WireGuard within %s: check the endpoint and that UDP reaches it, and that the token is unused and unexpired (fieldpass-broker token create makes a new one)", cfg.Endpoint, timeout)
		}
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "enrol with the broker at %s: %v", cfg.Endpoint, err)
	}
	if answer.Error != nil {
		return nil, fieldpass.Errorf(answer.Error.Code, "%s", answer.Error.Message)
	}
	er := answer.OK
	s := &State{
		DeviceID:   er.DeviceID,
		DeviceName: er.DeviceName,
		BrokerPort: er.BrokerPort,
		BrokerKey:  er.BrokerKey,
		Endpoints:  er.Endpoints,
		MTU:        er.MTU,
		PrivateKey: priv,
	}
	if len(s.Endpoints) == 0 {
		s.Endpoints = []string{cfg.Endpoint}
	}
	if s.BrokerKey != brokerKey.String() {
		return nil, fmt.Errorf("the broker answered with another key than it handshook with")
	}
	if s.TunnelAddress, err = netip.ParseAddr(er.TunnelAddress); err != nil {
		return nil, fmt.Errorf("broker sent a bad tunnel address: %w", err)
	}
	if s.BrokerAddress, err = netip.ParseAddr(er.BrokerAddress); err != nil {
		return nil, fmt.Errorf("broker sent a bad broker address: %w", err)
	}
	if err := s.save(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("enrolled as %s but could not save the state (decommission the device and enrol again): %w", s.DeviceName, err)
	}
	return s, nil
}

// askInTunnel dials the broker's enrolment exchange through dev, sends ask
// and reads the answer. A dial that fails (the broker has not admitted the
// token yet, or the handshake was lost) is tried again each second until
// ctx ends.
func askInTunnel(ctx context.Context, dev *wgnet.Device, to netip.AddrPort, ask tunnel.EnrollAsk) (tunnel.EnrollAnswer, error) {
	for {
		c, err := dev.DialTCP(ctx, to)
		if err == nil {
			defer c.Close()
			if dl, ok := ctx.Deadline(); ok {
				c.SetDeadline(dl)
			}
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			if err := tunnel.WriteEnrollAsk(c, ask); err != nil {
				return tunnel.EnrollAnswer{}, ctxErr(ctx, err)
			}
			a, err := tunnel.ReadEnrollAnswer(c)
			if err == nil {
				// Hang up and let the FIN out before the device goes: the
				// broker drops the token's peer when it sees it.
				c.Close()
				sleepCtx(ctx, 200*time.Millisecond)
			}
			if err != nil {
				// The broker hangs up without an answer when the token
				// tried a moment ago (one try a second).
				if ctx.Err() == nil && errors.Is(err, io.EOF) {
					c.Close()
					if !sleepCtx(ctx, time.Second) {
						return tunnel.EnrollAnswer{}, ctx.Err()
					}
					return askInTunnel(ctx, dev, to, ask)
				}
				return tunnel.EnrollAnswer{}, ctxErr(ctx, err)
			}
			return a, nil
		}
		if !sleepCtx(ctx, time.Second) {
			return tunnel.EnrollAnswer{}, ctx.Err()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
