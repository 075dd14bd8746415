package broker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// A barred peer is a disabled device, or one decommissioned less than
// Config.BarredFor ago, kept as a WireGuard peer for one purpose: its
// connector, which keeps calling, gets through to port 7070 and is told at
// its hello that the device may not connect (HelloDisabled), and so says
// so and calls rarely, instead of timing out in silence forever. Nothing
// else is open to it: it is in none of the maps that streams, presence and
// nudges use, only in barred, which the hello consults when byAddr has no
// peer. A device enabled again is nudged at its last endpoint, so it
// comes back at once rather than at its next rare call.
type barredPeer struct {
	dev fieldpass.Device // PublicKey: its key, or the retired one
	key wgnet.Key
}

// barredSince is the oldest decommissioning whose key is still barred.
func (b *Broker) barredSince() time.Time { return b.cfg.Now().Add(-b.cfg.BarredFor) }

// bar makes d a barred peer. An active peer with the same key wins: a key
// retired by decommissioning may, in principle, be enrolled again.
func (b *Broker) bar(d *fieldpass.Device) error {
	key, err := wgnet.ParseKey(d.PublicKey)
	if err != nil {
		return fmt.Errorf("device %s has a bad key: %w", d.Name, err)
	}
	b.mu.Lock()
	if b.byKey[key] != nil || b.closed {
		b.mu.Unlock()
		return nil
	}
	if old := b.barred[d.TunnelAddr]; old != nil && old.key == key {
		old.dev = *d
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	wp := wgnet.Peer{PublicKey: key, AllowedIPs: []netip.Prefix{netip.PrefixFrom(d.TunnelAddr, d.TunnelAddr.BitLen())}}
	if ep, err := netip.ParseAddrPort(d.Presence.Endpoint); err == nil {
		wp.Endpoint = ep
	}
	if err := b.dev.SetPeer(wp); err != nil {
		return err
	}
	b.mu.Lock()
	b.barred[d.TunnelAddr] = &barredPeer{dev: *d, key: key}
	b.mu.Unlock()
	return nil
}

// takeBarred drops the barred peer of device id from the map, leaving its
// WireGuard peer for the caller to reuse or remove; nil if there is none.
func (b *Broker) takeBarred(id string) *barredPeer {
	b.mu.Lock()
	defer b.mu.Unlock()
	for addr, bp := range b.barred {
		if bp.dev.ID == id {
			delete(b.barred, addr)
			return bp
		}
	}
	return nil
}

// reloadBarred makes the barred peers those Postgres names now.
func (b *Broker) reloadBarred(ctx context.Context) error {
	devs, err := b.db.BarredDevices(ctx, b.barredSince())
	if err != nil {
		return fmt.Errorf("load barred devices: %w", err)
	}
	seen := make(map[string]bool, len(devs))
	for _, d := range devs {
		seen[d.ID] = true
		if err := b.bar(d); err != nil {
			b.log.Warn("add barred peer", "device", d.Name, "err", err)
		}
	}
	b.mu.Lock()
	var gone []*barredPeer
	for _, bp := range b.barred {
		if !seen[bp.dev.ID] {
			gone = append(gone, bp)
		}
	}
	b.mu.Unlock()
	for _, bp := range gone {
		b.dropBarred(bp)
	}
	return nil
}

// dropBarred removes a barred peer, and its WireGuard peer unless an
// active device holds that key.
func (b *Broker) dropBarred(bp *barredPeer) {
	b.mu.Lock()
	if b.barred[bp.dev.TunnelAddr] == bp {
		delete(b.barred, bp.dev.TunnelAddr)
	}
	active := b.byKey[bp.key] != nil
	name := bp.dev.Name
	b.mu.Unlock()
	if !active {
		if err := b.dev.RemovePeer(bp.key); err != nil {
			b.log.Warn("remove barred peer", "device", name, "err", err)
		}
	}
}

// barredChanged follows a change of device id that left it without an
// active peer (d nil: gone): barred now, or no peer at all.
func (b *Broker) barredChanged(ctx context.Context, id string, was *barredPeer) {
	d, err := b.db.BarredDevice(ctx, id, b.barredSince())
	if err != nil {
		b.log.Warn("load barred device", "id", id, "err", err)
	}
	if d != nil {
		if err := b.bar(d); err != nil {
			b.log.Warn("add barred peer", "device", d.Name, "err", err)
		}
		return
	}
	if was != nil {
		b.dropBarred(was)
	}
}

// liveEndpoint is where WireGuard last heard key from, if it did.
func (b *Broker) liveEndpoint(key wgnet.Key) netip.AddrPort {
	stats, err := b.dev.Peers()
	if err != nil {
		return netip.AddrPort{}
	}
	for _, st := range stats {
		if st.PublicKey == key {
			return st.Endpoint
		}
	}
	return netip.AddrPort{}
}

// refuseBarred answers a barred device's hello with HelloDisabled, saying
// why and what an operator can do, and hangs up.
func (b *Broker) refuseBarred(c net.Conn, bp *barredPeer) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(b.cfg.HelloTimeout))
	if _, err := tunnel.ReadHello(c); err != nil {
		return
	}
	b.mu.Lock()
	dev := bp.dev // bar updates it in place when the device changes again
	b.mu.Unlock()
	reason := fmt.Sprintf("device %s is disabled: an operator can enable it (fieldpass-broker device enable %s)", dev.Name, dev.Name)
	if dev.State == fieldpass.DeviceDecommissioned {
		reason = fmt.Sprintf("device %s was decommissioned, which is final: enrol this device again with a new token", dev.Name)
	}
	b.log.Info("barred device called; told it", "device", dev.Name, "state", dev.State)
	b.cfg.Metrics.Handshake("disabled", false)
	tunnel.WriteHelloReply(c, tunnel.HelloReply{Code: tunnel.HelloDisabled, Reason: reason})
}
