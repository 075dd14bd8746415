package broker

import (
	"context"
	"net/netip"
	"time"

	"github.com/fieldpass/fieldpass/wgnet"
)

// HasPeer reports whether k is a WireGuard peer of the broker.
func (b *Broker) HasPeer(k wgnet.Key) bool {
	stats, err := b.dev.Peers()
	if err != nil {
		return false
	}
	for _, st := range stats {
		if st.PublicKey == k {
			return true
		}
	}
	return false
}

// CloneDetector exposes a peer's endpoint-flap detector to the external
// tests, which feed it moves without a network.
type CloneDetector struct{ h peerHistory }

func NewCloneDetector() *CloneDetector { return &CloneDetector{} }

// Move records a move to ep at now and reports whether a clone is suspected.
func (d *CloneDetector) Move(ep netip.AddrPort, now time.Time) bool {
	_, _, suspect := d.h.noteMove(ep, now)
	return suspect
}

// TakeLease takes device id's lease for b, as a hello does before it is
// answered, without a tunnel.
func (b *Broker) TakeLease(ctx context.Context, deviceID string) error {
	return b.fleet.leases.acquire(ctx, deviceID)
}
