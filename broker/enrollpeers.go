package broker

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// An enrolment peer is an outstanding enrolment token admitted as a
// WireGuard peer: its key is the public half of the key the token's secret
// stands for (fieldpass.EnrollmentKey), its address tunnel.EnrollmentAddress
// of the token's number. Like a barred peer it reaches nothing but port
// 7070, and there only the enrolment exchange: the hello finds it in
// enrolling, in none of the maps that streams, presence and nudges use.
// Nobody without the token can complete WireGuard's handshake as it. It is
// removed once the token is used (here at once; on other brokers at the
// notification) or expires.
type enrollPeer struct {
	key     wgnet.Key
	addr    netip.Addr
	device  string // the name the token enrols
	expires time.Time
	// busy and lastTry, under Broker.mu, allow one exchange at a time and
	// one a second per token.
	busy    bool
	lastTry time.Time
}

// enrollTryEvery is the least time between two enrolment attempts of one
// token.
const enrollTryEvery = time.Second

// enrollLinger bounds the wait for the connector's hang-up after the
// answer (its FIN may die with its temporary WireGuard device).
const enrollLinger = 3 * time.Second

// enrollState is what the broker keeps for enrolment peers.
type enrollState struct {
	reloadMu sync.Mutex // serialises reloadEnrollPeers
	// byAddr, under Broker.mu.
	byAddr map[netip.Addr]*enrollPeer
}

// enrollPeerAt is the enrolment peer at tunnel address a, if any.
func (b *Broker) enrollPeerAt(a netip.Addr) *enrollPeer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.enroll.byAddr[a]
}

// reloadEnrollPeers makes the enrolment peers the outstanding tokens
// Postgres names now. A token whose address a device holds, or whose key
// is a device's, is left out (see tunnel.EnrollmentAddress); of two with
// one address, the newer wins.
func (b *Broker) reloadEnrollPeers(ctx context.Context) (next time.Time, err error) {
	b.enroll.reloadMu.Lock()
	defer b.enroll.reloadMu.Unlock()
	list, err := b.db.EnrollmentPeers(ctx)
	if err != nil {
		return time.Time{}, err
	}
	want := map[netip.Addr]*enrollPeer{}
	for _, ep := range list {
		key, err := wgnet.ParseKey(ep.Key)
		if err != nil {
			b.log.Warn("enrolment token with a bad key", "device", ep.DeviceName, "err", err)
			continue
		}
		addr, err := tunnel.EnrollmentAddress(b.cfg.Prefix, ep.Seq)
		if err != nil {
			b.log.Warn("no tunnel address for an enrolment token", "device", ep.DeviceName, "err", err)
			continue
		}
		want[addr] = &enrollPeer{key: key, addr: addr, device: ep.DeviceName, expires: ep.ExpiresAt}
	}
	b.mu.Lock()
	var add, drop []*enrollPeer
	for addr, ep := range want {
		if b.byAddr[addr] != nil || b.barred[addr] != nil || b.byKey[ep.key] != nil {
			b.log.Warn("enrolment token's tunnel address or key is a device's: it can enrol over HTTPS only", "device", ep.device, "address", addr)
			delete(want, addr)
			continue
		}
		if old := b.enroll.byAddr[addr]; old != nil && old.key == ep.key {
			continue
		}
		add = append(add, ep)
		if next.IsZero() || ep.expires.Before(next) {
			next = ep.expires
		}
	}
	for addr, old := range b.enroll.byAddr {
		if w := want[addr]; w == nil || w.key != old.key {
			if old.busy {
				// Its enrolment is being answered right now (the
				// token's use is what announced the change): the peer
				// must carry the answer; serveEnroll drops it after.
				continue
			}
			drop = append(drop, old)
		} else if next.IsZero() || old.expires.Before(next) {
			next = old.expires
		}
	}
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return next, nil
	}
	for _, ep := range drop {
		b.dropEnrollPeer(ep)
	}
	for _, ep := range add {
		// In the map first, so that the peer's first connection finds it.
		b.mu.Lock()
		b.enroll.byAddr[ep.addr] = ep
		b.mu.Unlock()
		if err := b.dev.SetPeer(wgnet.Peer{PublicKey: ep.key, AllowedIPs: []netip.Prefix{netip.PrefixFrom(ep.addr, ep.addr.BitLen())}}); err != nil {
			b.log.Warn("add enrolment peer", "device", ep.device, "err", err)
			b.mu.Lock()
			delete(b.enroll.byAddr, ep.addr)
			b.mu.Unlock()
			continue
		}
		b.log.Debug("enrolment peer added", "device", ep.device, "address", ep.addr)
	}
	return next, nil
}

// dropEnrollPeer removes an enrolment peer, and its WireGuard peer unless a
// device holds that key.
func (b *Broker) dropEnrollPeer(ep *enrollPeer) {
	b.mu.Lock()
	if b.enroll.byAddr[ep.addr] == ep {
		delete(b.enroll.byAddr, ep.addr)
	}
	active := b.byKey[ep.key] != nil || b.closed
	b.mu.Unlock()
	if !active {
		if err := b.dev.RemovePeer(ep.key); err != nil {
			b.log.Warn("remove enrolment peer", "device", ep.device, "err", err)
		}
	}
}

// enrollPeersLoop keeps the enrolment peers those of the outstanding tokens:
// at once when a token is made or used (LISTEN), at the next expiry, and
// every minute in case a notification was missed.
func (b *Broker) enrollPeersLoop(ctx context.Context) {
	changed := make(chan struct{}, 1)
	go b.db.ListenEnrollmentTokens(ctx, func(string) {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	for {
		next, err := b.reloadEnrollPeers(ctx)
		if err != nil && ctx.Err() == nil {
			b.log.Warn("load enrolment tokens", "err", err)
		}
		wait := time.Minute
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(b.cfg.Now())+time.Millisecond, 0))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// serveEnroll runs one enrolment exchange with the token's peer: it reads
// the EnrollAsk, enrols the device in Postgres by the token's key (token
// used, device row and audit event in one transaction), answers with what
// the connector needs, and removes the token's peer.
func (b *Broker) serveEnroll(c net.Conn, ep *enrollPeer) {
	defer c.Close()
	now := time.Now()
	b.mu.Lock()
	if ep.busy || now.Sub(ep.lastTry) < enrollTryEvery {
		b.mu.Unlock()
		return
	}
	ep.busy, ep.lastTry = true, now
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		ep.busy = false
		b.mu.Unlock()
	}()

	timeout := b.cfg.HelloTimeout
	c.SetDeadline(now.Add(timeout))
	ask, err := tunnel.ReadEnrollAsk(c)
	if err != nil {
		b.log.Warn("bad enrolment request", "device", ep.device, "err", err)
		return
	}
	client := b.liveEndpoint(ep.key).String()
	refuse := func(err error) {
		b.log.Warn("enrolment refused", "device", ep.device, "client", client, "code", fieldpass.ErrorCode(err), "reason", fieldpass.ErrorMessage(err))
		if tunnel.WriteEnrollAnswer(c, tunnel.EnrollAnswer{Error: &tunnel.ErrorResponse{Code: fieldpass.ErrorCode(err), Message: fieldpass.ErrorMessage(err)}}) == nil {
			awaitHangup(c)
		}
	}
	devKey := wgnet.Key(ask.PublicKey)
	if devKey == b.PublicKey() || devKey == ep.key {
		refuse(fieldpass.Errorf(fieldpass.EINVALID, "invalid WireGuard public key: it is the broker's or the token's own; generate a new key pair"))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d, err := b.db.EnrollByTokenKeyAudited(ctx, client, ep.key.String(), base64.StdEncoding.EncodeToString(ask.PublicKey[:]), ask.ConnectorVersion, func(seq int64) (netip.Addr, error) {
		return fieldpass.TunnelAddress(b.cfg.Prefix, seq-1) // the sequence starts at 1
	})
	if err != nil {
		refuse(err)
		switch fieldpass.ErrorCode(err) {
		case fieldpass.ECONFLICT, fieldpass.EEXPIRED, fieldpass.ENOTFOUND:
			// The token can enrol nothing more (or its device name is
			// taken, which an operator fixes with a new token).
			b.dropEnrollPeer(ep)
		}
		return
	}
	b.log.Info("device enrolled inside the tunnel", "device", d.Name, "id", d.ID, "address", d.TunnelAddr, "client", client)
	b.cfg.Alerts.Notify(alerts.Alert{Kind: alerts.DeviceEnrolled, At: b.cfg.Now(), Device: d.Name, Details: map[string]any{
		"device_id": d.ID, "tunnel_address": d.TunnelAddr.String(), "client": client,
		"connector_version": ask.ConnectorVersion, "labels": d.Labels,
	}})
	err = tunnel.WriteEnrollAnswer(c, tunnel.EnrollAnswer{OK: &tunnel.EnrollResponse{
		DeviceID:      d.ID,
		DeviceName:    d.Name,
		TunnelAddress: d.TunnelAddr.String(),
		BrokerAddress: b.addr.String(),
		BrokerPort:    tunnel.BrokerPort,
		BrokerKey:     b.PublicKey().String(),
		Endpoints:     b.enrollEndpoints(),
		MTU:           b.cfg.MTU,
	}})
	if err == nil {
		awaitHangup(c)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		b.log.Warn("enrolment answer not delivered: the device is enrolled, its connector may not know", "device", d.Name, "err", err)
	}
	b.dropEnrollPeer(ep)
}

// awaitHangup waits for the connector to hang up, at most enrollLinger: it
// does once it has the answer, and until then the token's peer, which the
// caller removes next, must carry the answer's segments.
func awaitHangup(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(enrollLinger))
	io.Copy(io.Discard, io.LimitReader(c, 1))
}

// SetEnrollEndpoints sets the public UDP addresses told to devices that
// enrol inside the tunnel (Config.Endpoints), for a caller that learns them
// only once the broker is up (the listen port).
func (b *Broker) SetEnrollEndpoints(eps []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cfg.Endpoints = append([]string(nil), eps...)
}

func (b *Broker) enrollEndpoints() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg.Endpoints
}
