package postgres

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// The audited forms of the actions that change who may connect. Each records
// its audit event in the transaction of the change: both commit or neither
// does, so an action whose event cannot be written fails and changes
// nothing. Callers acting for a person or a device use these; the plain
// forms (CreateEnrollmentToken, Enroll, SetDeviceState) record nothing and
// are for tests and tools that set up state.

// DeviceTarget is the audit target naming a device.
func DeviceTarget(name string) string { return "device:" + name }

// CreateEnrollmentTokenAudited is CreateEnrollmentToken, recorded as
// enrollment_token.create by actor. The details hold the device name, labels
// and expiry; never the token.
func (db *DB) CreateEnrollmentTokenAudited(ctx context.Context, actor, deviceName string, labels map[string]string, ttl time.Duration) (token string, expiresAt time.Time, err error) {
	if err := checkActor(actor); err != nil {
		return "", time.Time{}, err
	}
	return db.createEnrollmentToken(ctx, deviceName, labels, ttl, func(tx pgx.Tx, expiresAt time.Time) error {
		_, err := db.AppendAuditTx(ctx, tx, fieldpass.AuditEvent{
			Actor:  actor,
			Action: fieldpass.AuditTokenCreate,
			Target: DeviceTarget(deviceName),
			Details: map[string]any{
				"device":     deviceName,
				"labels":     labelsOrEmpty(labels),
				"expires_at": expiresAt.UTC().Format(time.RFC3339Nano),
			},
		})
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		return nil
	})
}

// EnrollAudited is Enroll, recorded as device.enroll by "device:NAME" with
// the address the request came from (client). The details hold the device
// id, tunnel address, public key and connector version; never the token.
func (db *DB) EnrollAudited(ctx context.Context, client, token, publicKey, connectorVersion string, allocate func(seq int64) (netip.Addr, error)) (*fieldpass.Device, error) {
	if err := ParseEnrollmentToken(token); err != nil {
		return nil, err
	}
	return db.enroll(ctx, byHash(token), publicKey, connectorVersion, allocate, db.recordEnroll(ctx, client, connectorVersion))
}

// EnrollByTokenKeyAudited is EnrollByTokenKey, recorded as EnrollAudited
// records; client is the WireGuard endpoint the enrolment came from.
func (db *DB) EnrollByTokenKeyAudited(ctx context.Context, client, tokenKey, publicKey, connectorVersion string, allocate func(seq int64) (netip.Addr, error)) (*fieldpass.Device, error) {
	return db.enroll(ctx, tokenRef{"enroll_key", tokenKey}, publicKey, connectorVersion, allocate, db.recordEnroll(ctx, client, connectorVersion))
}

// recordEnroll appends an enrolment's device.enroll event.
func (db *DB) recordEnroll(ctx context.Context, client, connectorVersion string) func(tx pgx.Tx, dev *fieldpass.Device) error {
	return func(tx pgx.Tx, dev *fieldpass.Device) error {
		_, err := db.AppendAuditTx(ctx, tx, fieldpass.AuditEvent{
			Actor:  "device:" + dev.Name,
			Action: fieldpass.AuditDeviceEnroll,
			Target: DeviceTarget(dev.Name),
			Details: map[string]any{
				"device_id":         dev.ID,
				"client":            client,
				"tunnel_address":    dev.TunnelAddr.String(),
				"public_key":        dev.PublicKey, // WireGuard public half
				"connector_version": connectorVersion,
				"labels":            labelsOrEmpty(dev.Labels),
			},
		})
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		return nil
	}
}

// SetDeviceStateAudited is SetDeviceState, recorded by actor as
// device.enable, device.disable or device.decommission. A request for the
// state the device is already in changes nothing and records nothing.
func (db *DB) SetDeviceStateAudited(ctx context.Context, actor, name string, state fieldpass.DeviceState) (*fieldpass.Device, error) {
	if err := checkActor(actor); err != nil {
		return nil, err
	}
	action := map[fieldpass.DeviceState]string{
		fieldpass.DeviceActive:         fieldpass.AuditDeviceEnable,
		fieldpass.DeviceDisabled:       fieldpass.AuditDeviceDisable,
		fieldpass.DeviceDecommissioned: fieldpass.AuditDeviceDecommission,
	}[state]
	return db.setDeviceState(ctx, name, state, func(tx pgx.Tx, from, to *fieldpass.Device) error {
		_, err := db.AppendAuditTx(ctx, tx, fieldpass.AuditEvent{
			Actor:  actor,
			Action: action,
			Target: DeviceTarget(to.Name),
			Details: map[string]any{
				"device_id": to.ID,
				"from":      string(from.State),
				"to":        string(to.State),
			},
		})
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		return nil
	})
}

// SetDeviceKeepaliveAudited is SetDeviceKeepalive, recorded by actor as
// device.keepalive with the device id and the keepalive before and after,
// in seconds (0: the connector's own setting). Setting the value a device
// already has records nothing.
func (db *DB) SetDeviceKeepaliveAudited(ctx context.Context, actor, name string, keepalive time.Duration) (*fieldpass.Device, error) {
	if err := checkActor(actor); err != nil {
		return nil, err
	}
	return db.setDeviceKeepalive(ctx, name, keepalive, func(tx pgx.Tx, from, to *fieldpass.Device) error {
		_, err := db.AppendAuditTx(ctx, tx, fieldpass.AuditEvent{
			Actor:  actor,
			Action: fieldpass.AuditDeviceKeepalive,
			Target: DeviceTarget(to.Name),
			Details: map[string]any{
				"device_id":              to.ID,
				"from_keepalive_seconds": from.KeepaliveSeconds,
				"to_keepalive_seconds":   to.KeepaliveSeconds,
			},
		})
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		return nil
	})
}

// checkActor refuses an action nobody can be held to account for.
func checkActor(actor string) error {
	if actor == "" {
		return fieldpass.Errorf(fieldpass.EINVALID, "audit: no actor given")
	}
	return fieldpass.ValidateAuditEvent(fieldpass.AuditEvent{Actor: actor, Action: "check"})
}
