package broker

import "github.com/hashicorp/yamux"

// tunnelByID is how the session manager follows a device across
// reconnects: the live yamux session of the device with id now (nil while
// it is a peer that is not connected), by id so that a rename does not
// lose it. ok is false when the device is no peer here (disabled,
// decommissioned, unknown) or the broker is closing: its sessions then
// have nothing to wait for.
//
// The manager polls it while a device is away (Sessions.awaitReturn): a
// connector that reconnects replaces its tunnel in handshake, and a lookup
// under b.mu every few tens of milliseconds, only during a gap, costs less
// than a notification path through the hello.
func (b *Broker) tunnelByID(id string) (ys *yamux.Session, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.byID[id]
	if p == nil || b.closed {
		return nil, false
	}
	if p.sess != nil && !b.serves(id) {
		return nil, true // with a fleet: not ours to serve now (fleet.go)
	}
	return p.sess, true
}
