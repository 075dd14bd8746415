package postgres

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// MaxEnrollmentTokenTTL bounds how long an enrolment token stays valid.
const MaxEnrollmentTokenTTL = 30 * 24 * time.Hour

// ParseEnrollmentToken checks the form of an enrolment token (see
// fieldpass.FormatEnrollmentToken) without touching the database, so that a
// mistyped or truncated token gets a clear invalid error. The message never
// repeats the token: it is a secret.
func ParseEnrollmentToken(s string) error {
	return fieldpass.CheckEnrollmentToken(s)
}

// hashToken is what the store keeps of a token: the SHA-256 of the whole
// string.
func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// CreateEnrollmentToken makes a single-use token that enrols one device under
// deviceName with labels, valid for ttl (at most MaxEnrollmentTokenTTL). It
// refuses a name that a live (not decommissioned) device already has. The
// token is returned once and stored only as a hash.
func (db *DB) CreateEnrollmentToken(ctx context.Context, deviceName string, labels map[string]string, ttl time.Duration) (token string, expiresAt time.Time, err error) {
	return db.createEnrollmentToken(ctx, deviceName, labels, ttl, nil)
}

// createEnrollmentToken is CreateEnrollmentToken; record, if not nil, runs
// in the same transaction once the token is inserted, and its error undoes
// the insert (see CreateEnrollmentTokenAudited).
func (db *DB) createEnrollmentToken(ctx context.Context, deviceName string, labels map[string]string, ttl time.Duration, record func(tx pgx.Tx, expiresAt time.Time) error) (token string, expiresAt time.Time, err error) {
	if err := fieldpass.ValidateDeviceName(deviceName); err != nil {
		return "", time.Time{}, err
	}
	if err := fieldpass.ValidateLabels(labels); err != nil {
		return "", time.Time{}, err
	}
	// A lifetime under a second would round to nothing at the database's
	// microsecond precision, and is no use to anyone.
	if ttl < time.Second || ttl > MaxEnrollmentTokenTTL {
		return "", time.Time{}, fieldpass.Errorf(fieldpass.EINVALID, "invalid token lifetime %s: want at least 1s and at most %s", ttl, fieldpass.FormatDuration(MaxEnrollmentTokenTTL))
	}

	var secret [32]byte
	if _, err := io.ReadFull(db.rand(), secret[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("generate enrolment token: %w", err)
	}
	token = fieldpass.FormatEnrollmentToken(secret)
	// Only the public half of the token's WireGuard key is kept: it lets a
	// broker admit the token's peer, and proves nothing without the token.
	_, pub := fieldpass.EnrollmentKey(token)
	now := db.now()
	expiresAt = now.Add(ttl).Truncate(time.Microsecond)

	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		// One statement, so the name check and the insert see the same devices.
		tag, err := tx.Exec(ctx, `
			INSERT INTO enrollment_tokens (token_hash, device_name, labels, created_at, expires_at, enroll_key, enroll_seq)
			SELECT $1, $2, $3, $4, $5, $6, nextval('enrollment_peer_seq')
			WHERE NOT EXISTS (SELECT 1 FROM devices WHERE name = $2 AND state <> 'decommissioned')`,
			hashToken(token), deviceName, labelsOrEmpty(labels), now, expiresAt, base64.StdEncoding.EncodeToString(pub[:]))
		if err != nil {
			return fmt.Errorf("create enrolment token for %s: %w", deviceName, err)
		}
		if tag.RowsAffected() == 0 {
			return nameTaken(deviceName)
		}
		if record != nil {
			return record(tx, expiresAt)
		}
		return nil
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return token, expiresAt, nil
}

func nameTaken(name string) error {
	return fieldpass.Errorf(fieldpass.ECONFLICT, "device %q is already enrolled: decommission it first or choose another name", name)
}

// Enroll registers a device with its WireGuard public key, using up token.
//
// Everything happens in one transaction: the token is consumed with a
// conditional UPDATE (so of any number of concurrent calls with one token,
// exactly one gets past it and the others wait, then see it used), the name
// and key are checked, a tunnel address is allocated by passing
// nextval(device_tunnel_seq) to allocate, and the device is inserted as
// active. A failed enrol changes nothing: the token is consumed only together
// with the device row. (A sequence number drawn by a failed enrol is skipped;
// sequences are not transactional.)
//
// Errors: invalid (malformed token, key or version), not_found (unknown
// token), conflict (token already used; name enrolled; key in use), expired.
func (db *DB) Enroll(ctx context.Context, token, publicKey, connectorVersion string, allocate func(seq int64) (netip.Addr, error)) (*fieldpass.Device, error) {
	if err := ParseEnrollmentToken(token); err != nil {
		return nil, err
	}
	return db.enroll(ctx, byHash(token), publicKey, connectorVersion, allocate, nil)
}

// EnrollByTokenKey is Enroll for an enrolment inside WireGuard: the token
// is named by the public half of its WireGuard key (fieldpass.EnrollmentKey),
// which the broker knows from the handshake; the token itself never
// reaches the broker.
func (db *DB) EnrollByTokenKey(ctx context.Context, tokenKey, publicKey, connectorVersion string, allocate func(seq int64) (netip.Addr, error)) (*fieldpass.Device, error) {
	return db.enroll(ctx, tokenRef{"enroll_key", tokenKey}, publicKey, connectorVersion, allocate, nil)
}

// tokenRef names an enrolment token by one of its unique columns.
type tokenRef struct {
	column string // token_hash or enroll_key, never from input
	value  any
}

func byHash(token string) tokenRef { return tokenRef{"token_hash", hashToken(token)} }

// enroll is Enroll; record, if not nil, runs last in the enrolment's
// transaction, and its error undoes the enrolment (see EnrollAudited).
func (db *DB) enroll(ctx context.Context, ref tokenRef, publicKey, connectorVersion string, allocate func(seq int64) (netip.Addr, error), record func(tx pgx.Tx, dev *fieldpass.Device) error) (*fieldpass.Device, error) {
	if err := validatePublicKey(publicKey); err != nil {
		return nil, err
	}
	if err := validateText("connector version", connectorVersion, maxVersionLen); err != nil {
		return nil, err
	}
	if allocate == nil {
		return nil, errors.New("enroll: no tunnel address allocator")
	}
	now := db.now()

	var dev *fieldpass.Device
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var (
			tokenID, name string
			labels        map[string]string
			createdAt     time.Time
		)
		err := tx.QueryRow(ctx, `
			UPDATE enrollment_tokens SET used_at = $2
			WHERE `+ref.column+` = $1 AND used_at IS NULL AND expires_at > $2
			RETURNING id::text, device_name, labels, created_at`,
			ref.value, now).Scan(&tokenID, &name, &labels, &createdAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return unusableToken(ctx, tx, ref)
		}
		if err != nil {
			return fmt.Errorf("consume token: %w", err)
		}

		// Checked here for a clear message before a tunnel address is spent;
		// the unique indexes below catch a concurrent enrol.
		var nameUsed, keyUsed bool
		err = tx.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM devices WHERE name = $1 AND state <> 'decommissioned'),
			       EXISTS (SELECT 1 FROM devices WHERE public_key = $2)`,
			name, publicKey).Scan(&nameUsed, &keyUsed)
		if err != nil {
			return fmt.Errorf("check device %s: %w", name, err)
		}
		if nameUsed {
			return nameTaken(name)
		}
		if keyUsed {
			return keyTaken()
		}

		var seq int64
		if err := tx.QueryRow(ctx, `SELECT nextval('device_tunnel_seq')`).Scan(&seq); err != nil {
			return fmt.Errorf("allocate tunnel address: %w", err)
		}
		addr, err := allocate(seq)
		if err != nil {
			return fmt.Errorf("allocate tunnel address %d: %w", seq, err)
		}
		if !addr.IsValid() {
			return fmt.Errorf("allocate tunnel address %d: allocator returned no address", seq)
		}

		dev, err = scanDevice(tx.QueryRow(ctx, `
			INSERT INTO devices (name, labels, state, public_key, tunnel_addr,
			                     created_at, enrolled_at, state_changed_at, connector_version)
			VALUES ($1, $2, 'active', $3, $4, $5, $6, $6, NULLIF($7, ''))
			RETURNING `+deviceColumns,
			name, labelsOrEmpty(labels), publicKey, addr, createdAt, now, connectorVersion))
		switch uniqueViolation(err) {
		case "":
		case constraintLiveName:
			return nameTaken(name)
		case constraintPublicKey:
			return keyTaken()
		case constraintTunnelAddr:
			return fmt.Errorf("allocate tunnel address %d: %s is already taken", seq, addr)
		}
		if err != nil {
			return fmt.Errorf("insert device %s: %w", name, err)
		}

		_, err = tx.Exec(ctx, `UPDATE enrollment_tokens SET device_id = $2 WHERE id = $1`, tokenID, dev.ID)
		if err != nil {
			return fmt.Errorf("record token use: %w", err)
		}
		if record != nil {
			return record(tx, dev)
		}
		return nil
	})
	if err != nil {
		var fe *fieldpass.Error
		if errors.As(err, &fe) {
			return nil, err
		}
		return nil, fmt.Errorf("enroll: %w", err)
	}
	return dev, nil
}

func keyTaken() error {
	return fieldpass.Errorf(fieldpass.ECONFLICT, "this WireGuard public key is already used by another device: generate a new key pair")
}

// unusableToken explains why the token with hash could not be consumed. It
// runs after the failed UPDATE in the same transaction; under READ COMMITTED
// it sees a concurrent winner's commit.
func unusableToken(ctx context.Context, tx pgx.Tx, ref tokenRef) error {
	var usedAt *time.Time
	var expiresAt time.Time
	err := tx.QueryRow(ctx, `SELECT used_at, expires_at FROM enrollment_tokens WHERE `+ref.column+` = $1`, ref.value).Scan(&usedAt, &expiresAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fieldpass.Errorf(fieldpass.ENOTFOUND, "unknown enrolment token: check that it was copied whole, or create a new one")
	case err != nil:
		return fmt.Errorf("look up token: %w", err)
	case usedAt != nil:
		return fieldpass.Errorf(fieldpass.ECONFLICT, "enrolment token already used: create a new one for this device")
	default:
		return fieldpass.Errorf(fieldpass.EEXPIRED, "enrolment token expired at %s: create a new one", expiresAt.UTC().Format(time.RFC3339))
	}
}

// validatePublicKey accepts a WireGuard public key as wg(8) prints it: 32
// bytes in padded standard base64.
func validatePublicKey(key string) error {
	b, err := base64.StdEncoding.Strict().DecodeString(key)
	if err != nil || len(b) != 32 {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid WireGuard public key: want 32 bytes in base64 (44 characters)")
	}
	if lowOrder(b) {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid WireGuard public key: a low-order point (no shared secret is possible with it)")
	}
	return nil
}

// lowOrder reports whether the X25519 public key b is a low-order point.
// Clamping makes every scalar a multiple of 8, so Diffie-Hellman with a
// point of order 1, 2, 4 or 8 (all zeros among them, and their
// non-canonical encodings) gives all zeros whatever the scalar: crypto/ecdh
// refuses exactly those, so any fixed private key probes it.
func lowOrder(b []byte) bool {
	probe, err := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{0x5a}, 32))
	if err != nil {
		return true // unreachable: any 32 bytes are an X25519 private key
	}
	pub, err := ecdh.X25519().NewPublicKey(b)
	if err != nil {
		return true
	}
	_, err = probe.ECDH(pub)
	return err != nil
}

const (
	maxVersionLen  = 64
	maxEndpointLen = 255
	maxBrokerIDLen = 255
)

// validateText bounds free-form text that devices and brokers report, so
// that it stays printable in tables and logs.
func validateText(what, s string, max int) error {
	if len(s) > max {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid %s: longer than %d bytes", what, max)
	}
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return fieldpass.Errorf(fieldpass.EINVALID, "invalid %s %q: use printable ASCII without spaces", what, s)
		}
	}
	return nil
}

// labelsOrEmpty keeps a nil map from being stored as JSON null.
func labelsOrEmpty(labels map[string]string) map[string]string {
	if labels == nil {
		return map[string]string{}
	}
	return labels
}
