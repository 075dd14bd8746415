// Package wgtest is test support for WireGuard: handshakes that simulate a
// peer whose clock went backwards (SendInitiation), a UDP relay that
// gives a peer's path a delay, loss or a blackout (Relay, relay.go), and a
// network namespace of a test's own for kernel TUN devices (RunInNetns,
// netns.go).
//
// Field devices without a real-time clock reboot into 1970. A WireGuard
// responder only accepts a handshake initiation whose encrypted TAI64N
// timestamp is strictly greater than the greatest one it has accepted from
// that peer (replay protection, WireGuard paper §5.1 and §5.4.2). A device
// that rebooted into the past would therefore stay offline until the broker
// forgot the peer's handshake state (e.g. restarted); our broker works around
// this by resetting the handshake state of silent peers.
//
// Go's clock cannot be faked for another process or for a stock wireguard-go
// device, so we simulate the situation the other way round: SendInitiation
// lets a test make the broker accept ONE initiation from the device's key
// carrying a timestamp in the future (e.g. now + 1 year). From then on the
// real device's current-time initiations look to the broker exactly like
// those of a device whose clock went backwards.
//
// References are to "WireGuard: Next Generation Kernel Network Tunnel"
// (J. A. Donenfeld, NDSS 2017, https://www.wireguard.com/papers/wireguard.pdf).
// The code mirrors device/noise-protocol.go, device/noise-helpers.go,
// device/cookie.go and tai64n/ of golang.zx2c4.com/wireguard.
package wgtest

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/netip"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
)

// Protocol constants (paper §5.4).
const (
	construction = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
	identifier   = "WireGuard v1 zx2c4 Jason@zx2c4.com"
	labelMAC1    = "mac1----"

	typeInitiation  = 1
	typeResponse    = 2
	typeCookieReply = 3

	initiationSize  = 148 // type(4) sender(4) ephemeral(32) static(32+16) timestamp(12+16) mac1(16) mac2(16)
	responseSize    = 92  // type(4) sender(4) receiver(4) ephemeral(32) empty(0+16) mac1(16) mac2(16)
	cookieReplySize = 64
	mac1Offset      = initiationSize - 2*blake2s.Size128 // mac1 covers msg[:116]

	tai64nBase = uint64(0x400000000000000a) // TAI64 label of 1970-01-01 00:00:10 TAI

	// ResponseTimeout is how long SendInitiation waits for the handshake response.
	ResponseTimeout = 5 * time.Second
)

// SendInitiation sends one handshake initiation (paper §5.4.2) from the peer
// with static key initiatorPrivate to the WireGuard responder at `to`, whose
// static public key is responderPublic, with the encrypted TAI64N timestamp
// set to timestamp instead of the current time. It then waits up to
// ResponseTimeout for the matching handshake response (type 2, 92 bytes,
// receiver index = our sender index, valid mac1) and returns nil if one
// arrived, or an error otherwise. Unrelated datagrams are ignored.
//
// A responder that accepts the initiation records timestamp as the peer's
// newest; afterwards it silently drops every initiation from that peer with
// an older (or equal) timestamp. The responder also roams the peer's endpoint
// to conn's address, and the half-finished session is never confirmed (we
// never send transport data), so its last_handshake_time does not change.
//
// Limitations: no preshared key (the all-zero psk is used, as when none is
// configured) and no mac2/cookie support, so a responder under load (which
// replies with a cookie reply) makes SendInitiation fail. The read deadline
// of conn is cleared on return.
func SendInitiation(conn *net.UDPConn, to netip.AddrPort, initiatorPrivate, responderPublic [32]byte, timestamp time.Time) error {
	msg, sender, err := initiation(initiatorPrivate, responderPublic, timestamp)
	if err != nil {
		return err
	}
	if _, err := conn.WriteToUDPAddrPort(msg, to); err != nil {
		return fmt.Errorf("wgtest: send initiation: %w", err)
	}

	// mac1 of the response is keyed with the initiator's public key (§5.4.4).
	initiatorPublic, err := curve25519.X25519(initiatorPrivate[:], curve25519.Basepoint)
	if err != nil {
		return fmt.Errorf("wgtest: initiator public key: %w", err)
	}
	respMAC1Key := mac1Key(initiatorPublic)

	if err := conn.SetReadDeadline(time.Now().Add(ResponseTimeout)); err != nil {
		return err
	}
	defer conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 2048)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return fmt.Errorf("wgtest: no handshake response from %v (initiation rejected, e.g. as replay, or unknown key?): %w", to, err)
		}
		if from.Addr().Unmap() != to.Addr().Unmap() || from.Port() != to.Port() || n < 8 {
			continue
		}
		p := buf[:n]
		msgType := binary.LittleEndian.Uint32(p[0:4])
		receiver := binary.LittleEndian.Uint32(p[4:8]) // cookie reply: receiver at 4
		switch {
		case msgType == typeResponse && n == responseSize:
			if binary.LittleEndian.Uint32(p[8:12]) != sender {
				continue // response to some other initiation
			}
			const respMAC1 = responseSize - 2*blake2s.Size128 // mac1 covers resp[:60]
			want := mac(respMAC1Key[:], p[:respMAC1])
			if !hmac.Equal(want[:], p[respMAC1:respMAC1+blake2s.Size128]) {
				return errors.New("wgtest: handshake response with invalid mac1")
			}
			return nil
		case msgType == typeCookieReply && n == cookieReplySize && receiver == sender:
			return errors.New("wgtest: responder is under load and sent a cookie reply (mac2 not supported)")
		}
	}
}

// initiation builds the 148-byte initiation message and returns it with its
// random sender index. Notation follows §5.4.2: C = chaining key, H = hash,
// S = static, E = ephemeral; i = initiator, r = responder.
func initiation(staticPrivI, staticPubR [32]byte, timestamp time.Time) (msg []byte, sender uint32, err error) {
	staticPubI, err := curve25519.X25519(staticPrivI[:], curve25519.Basepoint)
	if err != nil {
		return nil, 0, err
	}
	var ephPrivI [32]byte // clamped by X25519
	if _, err := rand.Read(ephPrivI[:]); err != nil {
		return nil, 0, err
	}
	ephPubI, err := curve25519.X25519(ephPrivI[:], curve25519.Basepoint)
	if err != nil {
		return nil, 0, err
	}

	msg = make([]byte, initiationSize)
	binary.LittleEndian.PutUint32(msg[0:4], typeInitiation) // type 1 + 3 reserved zero bytes
	if _, err := rand.Read(msg[4:8]); err != nil {          // sender index I_i
		return nil, 0, err
	}
	sender = binary.LittleEndian.Uint32(msg[4:8])
	ephemeral := msg[8:40]
	static := msg[40:88]                    // AEAD(S_i^pub): 32 + 16 tag
	tai64n := msg[88:116]                   // AEAD(TAI64N): 12 + 16 tag
	mac1 := msg[mac1Offset : mac1Offset+16] // msg[116:132]; mac2 = msg[132:148] stays zero (no cookie)

	// C_i := HASH(CONSTRUCTION); H_i := HASH(C_i || IDENTIFIER || S_r^pub)
	c := blake2s.Sum256([]byte(construction))
	h := hashOf(c[:], []byte(identifier))
	h = hashOf(h[:], staticPubR[:])

	// msg.ephemeral := E_i^pub; C_i := KDF1(C_i, E_i^pub); H_i := HASH(H_i || msg.ephemeral)
	copy(ephemeral, ephPubI)
	c, _ = kdf2(c[:], ephPubI)
	h = hashOf(h[:], ephemeral)

	// (C_i, k) := KDF2(C_i, DH(E_i^priv, S_r^pub)); msg.static := AEAD(k, 0, S_i^pub, H_i)
	dh, err := curve25519.X25519(ephPrivI[:], staticPubR[:])
	if err != nil {
		return nil, 0, fmt.Errorf("wgtest: DH(E_i, S_r): %w", err)
	}
	c, k := kdf2(c[:], dh)
	seal(static, k, staticPubI, h[:])
	h = hashOf(h[:], static) // H_i := HASH(H_i || msg.static)

	// (C_i, k) := KDF2(C_i, DH(S_i^priv, S_r^pub)); msg.timestamp := AEAD(k, 0, TAI64N(), H_i)
	dh, err = curve25519.X25519(staticPrivI[:], staticPubR[:])
	if err != nil {
		return nil, 0, fmt.Errorf("wgtest: DH(S_i, S_r): %w", err)
	}
	_, k = kdf2(c[:], dh)
	ts := tai64nStamp(timestamp)
	seal(tai64n, k, ts[:], h[:])
	// (The responder would continue with H_i := HASH(H_i || msg.timestamp);
	// we don't need C_i/H_i any further since we don't finish the session.)

	// msg.mac1 := MAC(HASH(LABEL-MAC1 || S_r^pub), msg_α)   (§5.4.4)
	key := mac1Key(staticPubR[:])
	m := mac(key[:], msg[:mac1Offset])
	copy(mac1, m[:])
	return msg, sender, nil
}

// tai64nStamp encodes t as TAI64N (§5.4.2, cr.yp.to/libtai/tai64.html): 8
// bytes big-endian seconds (0x400000000000000a + Unix seconds) followed by 4
// bytes big-endian nanoseconds. (wireguard-go additionally zeroes the low 24
// bits of the nanoseconds to avoid leaking precise time; the responder only
// compares the 12 bytes lexicographically, so this is not needed here.)
func tai64nStamp(t time.Time) (ts [12]byte) {
	binary.BigEndian.PutUint64(ts[0:8], tai64nBase+uint64(t.Unix()))
	binary.BigEndian.PutUint32(ts[8:12], uint32(t.Nanosecond()))
	return ts
}

// hashOf is HASH(a || b) = BLAKE2s-256 (§5.4, "Hash(input)").
func hashOf(a, b []byte) [blake2s.Size]byte {
	h, _ := blake2s.New256(nil)
	h.Write(a)
	h.Write(b)
	var out [blake2s.Size]byte
	h.Sum(out[:0])
	return out
}

// kdf2 is KDF_2(key, input) of §5.4: HKDF (RFC 5869) with HMAC-BLAKE2s, the
// chaining key as salt, input as keying material and empty info, returning
// the first two 32-byte output blocks (τ1, τ2). KDF_1 is the first of them.
func kdf2(key, input []byte) (t1, t2 [blake2s.Size]byte) {
	r := hkdf.New(newBLAKE2s256, input, key, nil)
	if _, err := io.ReadFull(r, t1[:]); err != nil {
		panic(err)
	}
	if _, err := io.ReadFull(r, t2[:]); err != nil {
		panic(err)
	}
	return t1, t2
}

func newBLAKE2s256() hash.Hash {
	h, _ := blake2s.New256(nil)
	return h
}

// seal is AEAD(key, counter 0, plaintext, authtext) = ChaCha20-Poly1305 with
// a 96-bit nonce of 32 zero bits followed by the 64-bit little-endian
// counter, here 0 (§5.4). It writes len(plaintext)+16 bytes to dst.
func seal(dst []byte, key [32]byte, plaintext, ad []byte) {
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		panic(err)
	}
	var nonce [chacha20poly1305.NonceSize]byte
	aead.Seal(dst[:0], nonce[:], plaintext, ad)
}

// mac1Key is HASH(LABEL-MAC1 || S^pub) of the message's receiver (§5.4.4).
func mac1Key(receiverPublic []byte) [blake2s.Size]byte {
	return hashOf([]byte(labelMAC1), receiverPublic)
}

// mac is MAC(key, input) = keyed BLAKE2s with 16-byte output (§5.4).
func mac(key, input []byte) (out [blake2s.Size128]byte) {
	h, err := blake2s.New128(key)
	if err != nil {
		panic(err)
	}
	h.Write(input)
	h.Sum(out[:0])
	return out
}
