package wgnet

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/curve25519"
)

// Key is a Curve25519 key as WireGuard uses it: a private key, or the public
// key derived from one. The same type serves both because WireGuard's
// configuration does; which one a value holds is up to the caller, so never
// pass a Key to a logger unless it is known to be public.
type Key [32]byte

// keyBase64Len is the length of a base64 (std, padded) encoded 32-byte key.
const keyBase64Len = 44

// GenerateKey returns a new clamped Curve25519 private key read from rand
// (crypto/rand.Reader in production). wireguard-go's device package has no
// exported key generation, hence this.
func GenerateKey(rand io.Reader) (Key, error) {
	var k Key
	if _, err := io.ReadFull(rand, k[:]); err != nil {
		return Key{}, fmt.Errorf("generate key: %w", err)
	}
	// Clamping as in RFC 7748 §5; WireGuard's own tools store keys clamped.
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// Public returns the public key of private key k.
func (k Key) Public() Key {
	var pub Key
	// X25519 only fails for a low-order point, which the base point is not.
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		panic("wgnet: curve25519 base point multiplication failed: " + err.Error())
	}
	copy(pub[:], p)
	return pub
}

// String returns k in standard padded base64, the form wg(8) uses.
func (k Key) String() string {
	return base64.StdEncoding.EncodeToString(k[:])
}

// IsZero reports whether k is all zeroes (unset).
func (k Key) IsZero() bool {
	return k == Key{}
}

// ParseKey parses a key in standard padded base64, the form wg(8) prints.
func ParseKey(s string) (Key, error) {
	if s == "" {
		return Key{}, errors.New("parse key: empty")
	}
	if len(s) != keyBase64Len {
		return Key{}, fmt.Errorf("parse key: %d characters, want %d of base64", len(s), keyBase64Len)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return Key{}, fmt.Errorf("parse key: invalid base64: %w", err)
	}
	var k Key
	if len(b) != len(k) {
		return Key{}, fmt.Errorf("parse key: %d bytes, want %d", len(b), len(k))
	}
	copy(k[:], b)
	return k, nil
}
