package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnrollmentTokensChannel is the LISTEN channel on which every new
// enrolment token with a WireGuard key, and every such token used, is
// announced (payload: the token's id), so that brokers add or drop its
// enrolment peer at once.
const EnrollmentTokensChannel = "fieldpass_enrollment_tokens"

// ListenEnrollmentTokensApplicationName is the application_name of the
// connection that ListenEnrollmentTokens holds.
const ListenEnrollmentTokensApplicationName = "fieldpass listen enrollment tokens"

// ListenEnrollmentTokens calls fn with the id of each enrolment token
// created or used, as ListenDevices does for devices.
func (db *DB) ListenEnrollmentTokens(ctx context.Context, fn func(tokenID string)) error {
	return db.listen(ctx, EnrollmentTokensChannel, ListenEnrollmentTokensApplicationName, fn)
}

// EnrollmentPeer is what a broker needs to admit an outstanding enrolment
// token as a WireGuard peer: the public half of the token's key and the
// tunnel address drawn for it (Seq, mapped as a device's is). Never the
// token.
type EnrollmentPeer struct {
	Key        string // base64, as wg(8) prints it
	Seq        int64  // from enrollment_peer_seq: see tunnel.EnrollmentAddress
	DeviceName string
	ExpiresAt  time.Time
}

// EnrollmentPeers lists the tokens that can still enrol inside WireGuard:
// unused, unexpired, made with a key.
func (db *DB) EnrollmentPeers(ctx context.Context) ([]EnrollmentPeer, error) {
	rows, err := db.pool.Query(ctx, `
		SELECT enroll_key, enroll_seq, device_name, expires_at FROM enrollment_tokens
		WHERE enroll_key IS NOT NULL AND used_at IS NULL AND expires_at > $1
		ORDER BY enroll_seq`, db.now())
	if err != nil {
		return nil, fmt.Errorf("list enrolment peers: %w", err)
	}
	defer rows.Close()
	var out []EnrollmentPeer
	for rows.Next() {
		var p EnrollmentPeer
		if err := rows.Scan(&p.Key, &p.Seq, &p.DeviceName, &p.ExpiresAt); err != nil {
			return nil, fmt.Errorf("list enrolment peers: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list enrolment peers: %w", err)
	}
	return out, nil
}

// EnrollmentPeerOf returns the enrolment peer of token (its key and
// address), for the person who holds the token and prints the enrol
// command; nil if the token is unknown, used, expired or has no key.
func (db *DB) EnrollmentPeerOf(ctx context.Context, token string) (*EnrollmentPeer, error) {
	if err := ParseEnrollmentToken(token); err != nil {
		return nil, err
	}
	var p EnrollmentPeer
	err := db.pool.QueryRow(ctx, `
		SELECT enroll_key, enroll_seq, device_name, expires_at FROM enrollment_tokens
		WHERE token_hash = $1 AND enroll_key IS NOT NULL AND used_at IS NULL AND expires_at > $2`,
		hashToken(token), db.now()).Scan(&p.Key, &p.Seq, &p.DeviceName, &p.ExpiresAt)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up enrolment peer: %w", err)
	}
	return &p, nil
}
