package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// deviceColumns are read by scanDevice, in this order.
const deviceColumns = `id::text, name, labels, state, public_key, tunnel_addr,
	created_at, enrolled_at, online, last_seen, endpoint, connector_version, broker_id,
	keepalive_seconds, services`

func scanDevice(row pgx.Row) (*fieldpass.Device, error) {
	var (
		d                                      fieldpass.Device
		state                                  string
		publicKey, endpoint, version, brokerID *string
		lastSeen                               *time.Time
		keepalive                              *int32
	)
	err := row.Scan(&d.ID, &d.Name, &d.Labels, &state, &publicKey, &d.TunnelAddr,
		&d.CreatedAt, &d.EnrolledAt, &d.Presence.Online, &lastSeen, &endpoint, &version, &brokerID,
		&keepalive, &d.Services)
	if err != nil {
		return nil, err
	}
	d.State = fieldpass.DeviceState(state)
	if len(d.Labels) == 0 {
		d.Labels = nil
	}
	d.CreatedAt = d.CreatedAt.UTC()
	d.EnrolledAt = d.EnrolledAt.UTC()
	if lastSeen != nil {
		d.Presence.LastSeen = lastSeen.UTC()
	}
	d.PublicKey = deref(publicKey)
	d.Presence.Endpoint = deref(endpoint)
	d.Presence.ConnectorVersion = deref(version)
	d.Presence.BrokerID = deref(brokerID)
	if keepalive != nil {
		d.KeepaliveSeconds = int(*keepalive)
	}
	return &d, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (db *DB) queryDevices(ctx context.Context, what, query string, args ...any) ([]*fieldpass.Device, error) {
	rows, err := db.pool.Query(ctx, query, args...)
	return collectRows(rows, err, "list "+what, scanDevice)
}

// Device returns the live (not decommissioned) device named name.
func (db *DB) Device(ctx context.Context, name string) (*fieldpass.Device, error) {
	if err := fieldpass.ValidateDeviceName(name); err != nil {
		return nil, err
	}
	d, err := scanDevice(db.pool.QueryRow(ctx,
		`SELECT `+deviceColumns+` FROM devices WHERE name = $1 AND state <> 'decommissioned'`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "device %q not found", name)
	}
	if err != nil {
		return nil, fmt.Errorf("get device %s: %w", name, err)
	}
	return d, nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// DeviceByID returns the device with id in whatever state, decommissioned
// included: ids are what sessions and audit records keep.
func (db *DB) DeviceByID(ctx context.Context, id string) (*fieldpass.Device, error) {
	if !uuidRE.MatchString(id) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", id)
	}
	d, err := scanDevice(db.pool.QueryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1::uuid`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "device %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get device %s: %w", id, err)
	}
	return d, nil
}

// Devices returns every live (not decommissioned) device, sorted by name.
func (db *DB) Devices(ctx context.Context) ([]*fieldpass.Device, error) {
	return db.queryDevices(ctx, "devices",
		`SELECT `+deviceColumns+` FROM devices WHERE state <> 'decommissioned' ORDER BY name`)
}

// PeerDevices returns the devices the broker should have as WireGuard peers:
// active, with a key. Sorted by name.
func (db *DB) PeerDevices(ctx context.Context) ([]*fieldpass.Device, error) {
	return db.queryDevices(ctx, "peer devices",
		`SELECT `+deviceColumns+` FROM devices WHERE state = 'active' AND public_key IS NOT NULL ORDER BY name`)
}

// BarredDevices returns the devices a broker keeps as barred WireGuard peers,
// whose connectors are told at their hello that they may not connect:
// disabled ones with their key, and those decommissioned since since with
// the key they had (PublicKey holds it). Sorted by name.
func (db *DB) BarredDevices(ctx context.Context, since time.Time) ([]*fieldpass.Device, error) {
	return db.queryDevices(ctx, "barred devices", `
		SELECT `+barredColumns+` FROM devices
		WHERE (state = 'disabled' AND public_key IS NOT NULL)
		   OR (state = 'decommissioned' AND retired_key IS NOT NULL AND state_changed_at >= $1)
		ORDER BY name`, since)
}

// BarredDevice returns the device with id as BarredDevices would, or nil if
// it is not barred (active, unknown, or decommissioned before since).
func (db *DB) BarredDevice(ctx context.Context, id string, since time.Time) (*fieldpass.Device, error) {
	if !uuidRE.MatchString(id) {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", id)
	}
	d, err := scanDevice(db.pool.QueryRow(ctx, `
		SELECT `+barredColumns+` FROM devices WHERE id = $1::uuid AND (
		   (state = 'disabled' AND public_key IS NOT NULL)
		OR (state = 'decommissioned' AND retired_key IS NOT NULL AND state_changed_at >= $2))`, id, since))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get barred device %s: %w", id, err)
	}
	return d, nil
}

// barredColumns are deviceColumns with the retired key standing in for a
// decommissioned device's key.
var barredColumns = strings.Replace(deviceColumns, "public_key", "COALESCE(public_key, retired_key)", 1)

// DevicesNamed returns the live devices among names, in no set order;
// names that name none are left out.
func (db *DB) DevicesNamed(ctx context.Context, names []string) ([]*fieldpass.Device, error) {
	return db.queryDevices(ctx, "devices",
		`SELECT `+deviceColumns+` FROM devices WHERE name = ANY($1::text[]) AND state <> 'decommissioned'`, names)
}

// SetDeviceServices records the service names a device's connector
// announced in its hello (nil: it did not say, which keeps what was known).
// Like presence it does not notify: no WireGuard peer changes.
func (db *DB) SetDeviceServices(ctx context.Context, deviceID string, services []string) error {
	if !uuidRE.MatchString(deviceID) {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", deviceID)
	}
	if services == nil {
		return nil
	}
	if len(services) > 64 {
		return fieldpass.Errorf(fieldpass.EINVALID, "%d services: at most 64", len(services))
	}
	for _, s := range services {
		if err := fieldpass.ValidateServiceName(s); err != nil {
			return err
		}
	}
	_, err := db.pool.Exec(ctx, `UPDATE devices SET services = $2 WHERE id = $1::uuid`, deviceID, services)
	if err != nil {
		return fmt.Errorf("record services of %s: %w", deviceID, err)
	}
	return nil
}

// SetDeviceState moves the live device named name to state:
//
//	active   -> disabled, decommissioned
//	disabled -> active, decommissioned
//
// Decommissioning is final: it drops the key, marks the device offline and
// frees the name for a new enrolment. Asking for the state a device is
// already in changes nothing and is not an error. Running brokers are told
// of every change through ListenDevices.
func (db *DB) SetDeviceState(ctx context.Context, name string, state fieldpass.DeviceState) (*fieldpass.Device, error) {
	return db.setDeviceState(ctx, name, state, nil)
}

// setDeviceState is SetDeviceState; record, if not nil, runs last in the
// transaction of an actual change (not of a no-op), and its error undoes the
// change (see SetDeviceStateAudited).
func (db *DB) setDeviceState(ctx context.Context, name string, state fieldpass.DeviceState, record func(tx pgx.Tx, from, to *fieldpass.Device) error) (*fieldpass.Device, error) {
	if err := fieldpass.ValidateDeviceName(name); err != nil {
		return nil, err
	}
	switch state {
	case fieldpass.DeviceActive, fieldpass.DeviceDisabled, fieldpass.DeviceDecommissioned:
	default:
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "invalid device state %q: want active, disabled or decommissioned", state)
	}
	now := db.now()

	var dev *fieldpass.Device
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		// The row lock serialises concurrent changes to one device.
		cur, err := scanDevice(tx.QueryRow(ctx,
			`SELECT `+deviceColumns+` FROM devices WHERE name = $1 AND state <> 'decommissioned' FOR UPDATE`, name))
		if errors.Is(err, pgx.ErrNoRows) {
			return noLiveDevice(ctx, tx, name, state)
		}
		if err != nil {
			return fmt.Errorf("get device: %w", err)
		}
		if cur.State == state {
			dev = cur
			return nil
		}
		dev, err = scanDevice(tx.QueryRow(ctx, `
			UPDATE devices SET
				state = $2,
				state_changed_at = $3,
				public_key = CASE WHEN $2 = 'decommissioned' THEN NULL ELSE public_key END,
				retired_key = CASE WHEN $2 = 'decommissioned' THEN public_key ELSE retired_key END,
				online = online AND $2 <> 'decommissioned'
			WHERE id = $1::uuid
			RETURNING `+deviceColumns,
			cur.ID, string(state), now))
		if err != nil {
			return fmt.Errorf("update device: %w", err)
		}
		if record != nil {
			return record(tx, cur, dev)
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err, fmt.Sprintf("set device %s %s", name, state))
	}
	return dev, nil
}

// SetDeviceKeepalive sets the WireGuard keepalive of the live device named
// name; 0 clears it (the connector's own setting applies again). Setting the
// value a device already has changes nothing and is not an error. Running
// brokers are told through ListenDevices and pass it on to the connected
// device.
func (db *DB) SetDeviceKeepalive(ctx context.Context, name string, keepalive time.Duration) (*fieldpass.Device, error) {
	return db.setDeviceKeepalive(ctx, name, keepalive, nil)
}

// setDeviceKeepalive is SetDeviceKeepalive; record, if not nil, runs last in
// the transaction of an actual change, and its error undoes the change.
func (db *DB) setDeviceKeepalive(ctx context.Context, name string, keepalive time.Duration, record func(tx pgx.Tx, from, to *fieldpass.Device) error) (*fieldpass.Device, error) {
	if err := fieldpass.ValidateDeviceName(name); err != nil {
		return nil, err
	}
	if err := fieldpass.ValidateKeepalive(keepalive); err != nil {
		return nil, err
	}
	var secs *int32
	if keepalive != 0 {
		v := int32(keepalive / time.Second)
		secs = &v
	}
	var dev *fieldpass.Device
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		cur, err := scanDevice(tx.QueryRow(ctx,
			`SELECT `+deviceColumns+` FROM devices WHERE name = $1 AND state <> 'decommissioned' FOR UPDATE`, name))
		if errors.Is(err, pgx.ErrNoRows) {
			return fieldpass.Errorf(fieldpass.ENOTFOUND, "device %q not found", name)
		}
		if err != nil {
			return fmt.Errorf("get device: %w", err)
		}
		if time.Duration(cur.KeepaliveSeconds)*time.Second == keepalive {
			dev = cur
			return nil
		}
		dev, err = scanDevice(tx.QueryRow(ctx,
			`UPDATE devices SET keepalive_seconds = $2 WHERE id = $1::uuid RETURNING `+deviceColumns,
			cur.ID, secs))
		if err != nil {
			return fmt.Errorf("update device: %w", err)
		}
		if record != nil {
			return record(tx, cur, dev)
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err, fmt.Sprintf("set keepalive of device %s", name))
	}
	return dev, nil
}

// noLiveDevice explains why no live device is named name: a decommissioned
// one (decommissioning is final) or none at all.
func noLiveDevice(ctx context.Context, tx pgx.Tx, name string, want fieldpass.DeviceState) error {
	var decommissioned bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM devices WHERE name = $1)`, name).Scan(&decommissioned)
	switch {
	case err != nil:
		return fmt.Errorf("get device: %w", err)
	case !decommissioned:
		return fieldpass.Errorf(fieldpass.ENOTFOUND, "device %q not found", name)
	case want == fieldpass.DeviceDecommissioned:
		return fieldpass.Errorf(fieldpass.ECONFLICT, "device %q is already decommissioned", name)
	default:
		return fieldpass.Errorf(fieldpass.EINVALID, "device %q was decommissioned, which is final: enrol it again with a new token", name)
	}
}

// UpdatePresence records what the broker sees of a device's tunnel, replacing
// the previous presence whole (a zero LastSeen and empty strings are stored
// as unknown). It deliberately does not notify listeners: it runs on every
// handshake and disconnect.
func (db *DB) UpdatePresence(ctx context.Context, deviceID string, p fieldpass.Presence) error {
	if !uuidRE.MatchString(deviceID) {
		return fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", deviceID)
	}
	if err := validateText("endpoint", p.Endpoint, maxEndpointLen); err != nil {
		return err
	}
	if err := validateText("connector version", p.ConnectorVersion, maxVersionLen); err != nil {
		return err
	}
	if err := validateText("broker id", p.BrokerID, maxBrokerIDLen); err != nil {
		return err
	}
	var lastSeen *time.Time
	if !p.LastSeen.IsZero() {
		lastSeen = &p.LastSeen
	}
	tag, err := db.pool.Exec(ctx, `
		UPDATE devices SET
			online = $2,
			last_seen = GREATEST(last_seen, $3), -- never backwards: a touch may have written a later time
			endpoint = NULLIF($4, ''),
			connector_version = NULLIF($5, ''),
			broker_id = NULLIF($6, '')
		WHERE id = $1::uuid`,
		deviceID, p.Online, lastSeen, p.Endpoint, p.ConnectorVersion, p.BrokerID)
	if err != nil {
		return fmt.Errorf("update presence of %s: %w", deviceID, err)
	}
	if tag.RowsAffected() == 0 {
		return fieldpass.Errorf(fieldpass.ENOTFOUND, "device %s not found", deviceID)
	}
	return nil
}

// MarkBrokerOffline marks offline every device whose tunnel brokerID holds. A
// broker calls it when it starts (its tunnels died with the previous run) and
// when it stops.
func (db *DB) MarkBrokerOffline(ctx context.Context, brokerID string) error {
	if brokerID == "" {
		return fieldpass.Errorf(fieldpass.EINVALID, "empty broker id")
	}
	if err := validateText("broker id", brokerID, maxBrokerIDLen); err != nil {
		return err
	}
	_, err := db.pool.Exec(ctx, `UPDATE devices SET online = false WHERE broker_id = $1 AND online`, brokerID)
	if err != nil {
		return fmt.Errorf("mark devices of broker %s offline: %w", brokerID, err)
	}
	return nil
}
