package wgnet

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.zx2c4.com/wireguard/device"
)

// Peer is the configuration of one peer.
type Peer struct {
	// PublicKey identifies the peer.
	PublicKey Key
	// AllowedIPs are the tunnel addresses the peer may send from, and the
	// ones this device sends to it.
	AllowedIPs []netip.Prefix
	// Endpoint is the peer's UDP address, if known in advance (the
	// connector knows the broker's; the broker learns each connector's from
	// its packets). The zero value leaves the current endpoint as it is.
	Endpoint netip.AddrPort
	// PersistentKeepalive is how often to send a keepalive when nothing
	// else was sent, rounded up to whole seconds; 0 turns keepalives off.
	PersistentKeepalive time.Duration
}

// PeerStats is the state of one peer as wireguard-go reports it.
type PeerStats struct {
	PublicKey Key
	// Endpoint is where packets to the peer go: the configured endpoint
	// or, once the peer has sent, the address it last sent from.
	Endpoint netip.AddrPort
	// LastHandshake is when the last handshake completed; zero if never.
	LastHandshake       time.Time
	RxBytes, TxBytes    uint64
	PersistentKeepalive time.Duration
}

// peerState is a peer as parsed from wireguard-go's UAPI dump.
type peerState struct {
	PeerStats
	allowedIPs []netip.Prefix // filled only when asked for
}

// SetPeer adds a peer or updates one, replacing its allowed IPs.
func (d *Device) SetPeer(p Peer) error {
	if p.PublicKey.IsZero() {
		return errors.New("set peer: no public key")
	}
	if p.PublicKey == d.pub {
		// wireguard-go would silently ignore it.
		return fmt.Errorf("set peer %s: that is this device's own key", p.PublicKey)
	}
	var b strings.Builder
	if err := writePeerConfig(&b, p); err != nil {
		return fmt.Errorf("set peer %s: %w", p.PublicKey, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.wg.IpcSet(b.String()); err != nil {
		return fmt.Errorf("set peer %s: %w", p.PublicKey, err)
	}
	return nil
}

// writePeerConfig writes p as UAPI set lines.
func writePeerConfig(b *strings.Builder, p Peer) error {
	if p.PersistentKeepalive < 0 {
		return fmt.Errorf("negative persistent keepalive %s", p.PersistentKeepalive)
	}
	keepalive := (p.PersistentKeepalive + time.Second - 1) / time.Second
	if keepalive > 65535 {
		return fmt.Errorf("persistent keepalive %s above 65535s", p.PersistentKeepalive)
	}
	b.Grow(150 + 45*len(p.AllowedIPs))
	b.WriteString("public_key=")
	b.WriteString(hex.EncodeToString(p.PublicKey[:]))
	b.WriteString("\nreplace_allowed_ips=true\n")
	for _, prefix := range p.AllowedIPs {
		if !prefix.IsValid() {
			return fmt.Errorf("invalid allowed IP %s", prefix)
		}
		b.WriteString("allowed_ip=")
		b.WriteString(prefix.Masked().String())
		b.WriteByte('\n')
	}
	if p.Endpoint.IsValid() {
		b.WriteString("endpoint=")
		b.WriteString(p.Endpoint.String())
		b.WriteByte('\n')
	}
	b.WriteString("persistent_keepalive_interval=")
	b.WriteString(strconv.Itoa(int(keepalive)))
	b.WriteByte('\n')
	return nil
}

// RemovePeer removes a peer and its session. Removing an unknown peer is
// not an error.
func (d *Device) RemovePeer(k Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	// Direct, not through IpcSet: a UAPI "remove" of an unknown key would
	// first create the peer (a Curve25519 computation) to then remove it.
	d.wg.RemovePeer(device.NoisePublicKey(k))
	return nil
}

// ResetPeer removes a peer and adds it again with its current allowed IPs,
// endpoint and keepalive, in one step. wireguard-go thereby forgets the
// peer's session and handshake state, in particular the TAI64N timestamp of
// its last accepted handshake: a device without a real-time clock that
// rebooted into 1970 sends older timestamps, which WireGuard otherwise
// refuses as replays until the clock passes the old one.
//
// With kick, a handshake toward the peer's known endpoint starts at once, so
// a peer reset mid-conversation does not wait for its old session to time
// out; a broker resetting a silent peer passes false, since sending to an
// endpoint that has gone quiet only costs the device data.
func (d *Device) ResetPeer(k Key, kick bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var (
		cur   peerState
		found bool
	)
	err := d.scanPeers(&k, func(s *peerState) { cur, found = *s, true })
	if err != nil {
		return fmt.Errorf("reset peer %s: %w", k, err)
	}
	if !found {
		return fmt.Errorf("reset peer %s: %w", k, ErrUnknownPeer)
	}
	var b strings.Builder
	b.WriteString("public_key=")
	b.WriteString(hex.EncodeToString(k[:]))
	b.WriteString("\nremove=true\n")
	err = writePeerConfig(&b, Peer{
		PublicKey:           k,
		AllowedIPs:          cur.allowedIPs,
		Endpoint:            cur.Endpoint,
		PersistentKeepalive: cur.PersistentKeepalive,
	})
	if err != nil {
		return fmt.Errorf("reset peer %s: %w", k, err)
	}
	if err := d.wg.IpcSet(b.String()); err != nil {
		return fmt.Errorf("reset peer %s: %w", k, err)
	}
	if kick && cur.Endpoint.IsValid() {
		if p := d.wg.LookupPeer(device.NoisePublicKey(k)); p != nil {
			p.SendKeepalive()
		}
	}
	return nil
}

// DropQueued drops the packets held for peer k until a handshake with it
// completes. wireguard-go keeps each in a buffer of 64 KiB through up to
// 90 s of handshake attempts, so a broker that called back thousands of
// devices that did not answer would hold one such buffer per device.
func (d *Device) DropQueued(k Key) {
	if p := d.wg.LookupPeer(device.NoisePublicKey(k)); p != nil {
		p.FlushStagedPackets()
	}
}

// SetPersistentKeepalive changes only the persistent keepalive of an
// existing peer (rounded up to whole seconds; 0 turns it off), keeping its
// session, endpoint and allowed IPs: a connector takes a new interval from
// its broker without a new handshake.
func (d *Device) SetPersistentKeepalive(k Key, keepalive time.Duration) error {
	if keepalive < 0 {
		return fmt.Errorf("set keepalive of peer %s: negative persistent keepalive %s", k, keepalive)
	}
	secs := (keepalive + time.Second - 1) / time.Second
	if secs > 65535 {
		return fmt.Errorf("set keepalive of peer %s: persistent keepalive %s above 65535s", k, keepalive)
	}
	cfg := "public_key=" + hex.EncodeToString(k[:]) + "\nupdate_only=true\npersistent_keepalive_interval=" + strconv.Itoa(int(secs)) + "\n"
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok, err := d.Peer(k); err != nil {
		return fmt.Errorf("set keepalive of peer %s: %w", k, err)
	} else if !ok {
		return fmt.Errorf("set keepalive of peer %s: %w", k, ErrUnknownPeer)
	}
	if err := d.wg.IpcSet(cfg); err != nil {
		return fmt.Errorf("set keepalive of peer %s: %w", k, err)
	}
	return nil
}

// Peers returns the state of every peer, in no particular order.
func (d *Device) Peers() ([]PeerStats, error) { return d.AppendPeers(nil) }

// AppendPeers appends the state of every peer to dst, in no particular
// order, and returns the extended slice. A broker reading ten thousand
// peers every few seconds passes the slice of its previous read, cut to
// length zero: a fresh one was a megabyte of garbage per read.
func (d *Device) AppendPeers(dst []PeerStats) ([]PeerStats, error) {
	if err := d.scanPeers(nil, func(s *peerState) { dst = append(dst, s.PeerStats) }); err != nil {
		return dst, fmt.Errorf("list peers: %w", err)
	}
	return dst, nil
}

// Peer returns the state of one peer, and whether it exists.
func (d *Device) Peer(k Key) (PeerStats, bool, error) {
	var (
		stats PeerStats
		found bool
	)
	if err := d.scanPeers(&k, func(s *peerState) { stats, found = s.PeerStats, true }); err != nil {
		return PeerStats{}, false, fmt.Errorf("peer %s: %w", k, err)
	}
	return stats, found, nil
}

// scanPeers dumps the device's state into the reused buffer and calls fn
// for each peer (only the one asked for, if only is set). A broker reads
// every peer's counters every few seconds; a fresh string per dump was most
// of its garbage at a thousand peers. fn must copy what it keeps: the
// buffer is reused once scanPeers returns.
func (d *Device) scanPeers(only *Key, fn func(*peerState)) error {
	d.dumpMu.Lock()
	defer d.dumpMu.Unlock()
	d.dump.Reset()
	if err := d.wg.IpcGetOperation(&d.dump); err != nil {
		return err
	}
	b := d.dump.Bytes()
	return scanPeers(unsafe.String(unsafe.SliceData(b), len(b)), only, fn)
}

// uapiListenPort returns the listen_port of a UAPI dump, which precedes
// the peers.
func uapiListenPort(uapi string) (uint16, bool) {
	for len(uapi) > 0 {
		var line string
		line, uapi, _ = strings.Cut(uapi, "\n")
		key, value, _ := strings.Cut(line, "=")
		switch key {
		case "listen_port":
			port, err := strconv.ParseUint(value, 10, 16)
			return uint16(port), err == nil
		case "public_key":
			return 0, false
		}
	}
	return 0, false
}

// scanPeers parses a UAPI dump (see wireguard-go device/uapi.go); with only
// set it skips the fields of every other peer. It allocates nothing per peer
// beyond what fn does, since a broker's dump runs to thousands of peers.
func scanPeers(uapi string, only *Key, fn func(*peerState)) error {
	var (
		cur       peerState
		have      bool // cur holds a peer to report
		skip      bool // the current peer is not the one asked for
		sec, nsec int64
	)
	flush := func() {
		if have {
			if sec != 0 || nsec != 0 {
				cur.LastHandshake = time.Unix(sec, nsec)
			}
			fn(&cur)
		}
		cur, have, sec, nsec = peerState{}, false, 0, 0
	}
	for len(uapi) > 0 {
		var line string
		line, uapi, _ = strings.Cut(uapi, "\n")
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			if line == "" {
				continue
			}
			return fmt.Errorf("parse UAPI: line without '='")
		}
		if key == "public_key" {
			if only != nil && have {
				break // the one peer asked for is complete
			}
			flush()
			var k Key
			if err := decodeHexKey(&k, value); err != nil {
				return fmt.Errorf("parse UAPI: public_key: %w", err)
			}
			if only != nil && k != *only {
				skip = true
				continue
			}
			skip, have = false, true
			cur.PublicKey = k
			continue
		}
		if !have || skip {
			continue // device fields, or a peer not asked for
		}
		var err error
		switch key {
		case "endpoint":
			cur.Endpoint, err = netip.ParseAddrPort(value)
		case "last_handshake_time_sec":
			sec, err = strconv.ParseInt(value, 10, 64)
		case "last_handshake_time_nsec":
			nsec, err = strconv.ParseInt(value, 10, 64)
		case "tx_bytes":
			cur.TxBytes, err = strconv.ParseUint(value, 10, 64)
		case "rx_bytes":
			cur.RxBytes, err = strconv.ParseUint(value, 10, 64)
		case "persistent_keepalive_interval":
			var secs uint64
			secs, err = strconv.ParseUint(value, 10, 16)
			cur.PersistentKeepalive = time.Duration(secs) * time.Second
		case "allowed_ip":
			if only != nil {
				var p netip.Prefix
				p, err = netip.ParsePrefix(value)
				cur.allowedIPs = append(cur.allowedIPs, p)
			}
		}
		if err != nil {
			// Formatted now, not wrapped: the parse errors keep slices of
			// the input, which Peers reuses once this returns.
			return fmt.Errorf("parse UAPI: %s: %v", key, err)
		}
	}
	flush()
	return nil
}

// decodeHexKey decodes 64 hex digits into k without converting value to a
// []byte (an allocation per peer in a dump of thousands).
func decodeHexKey(k *Key, value string) error {
	if len(value) != 2*len(k) {
		return fmt.Errorf("%d hex digits, want %d", len(value), 2*len(k))
	}
	for i := range k {
		hi, ok1 := fromHex(value[2*i])
		lo, ok2 := fromHex(value[2*i+1])
		if !ok1 || !ok2 {
			return fmt.Errorf("invalid hex digit in %q", value[2*i:2*i+2])
		}
		k[i] = hi<<4 | lo
	}
	return nil
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
