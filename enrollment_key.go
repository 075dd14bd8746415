package fieldpass

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
)

// enrollKeyInfo separates this use of the token's secret from any other.
const enrollKeyInfo = "fieldpass enrolment wireguard key v1"

// EnrollmentKey derives the one-time WireGuard key pair of an enrolment
// token: HKDF-SHA256 over the whole token string (which holds its 32-byte
// secret) with enrollKeyInfo, clamped as WireGuard keys are (RFC 7748 §5).
// The same token always gives the same pair; the public half reveals
// nothing of the token.
func EnrollmentKey(token string) (private, public [32]byte) {
	k, err := hkdf.Key(sha256.New, []byte(token), nil, enrollKeyInfo, 32)
	if err != nil {
		panic("fieldpass: hkdf of 32 bytes failed: " + err.Error()) // only for lengths over 255*32
	}
	copy(private[:], k)
	private[0] &= 248
	private[31] = (private[31] & 127) | 64
	pk, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		panic("fieldpass: X25519 private key: " + err.Error()) // any 32 bytes are one
	}
	copy(public[:], pk.PublicKey().Bytes())
	return private, public
}
