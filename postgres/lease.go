package postgres

// Device leases and the broker roll (migrations/00020_leases.sql): several
// brokers share one fleet, and each device is held by one broker at a time.
//
// The rule that keeps a device from being held twice: a lease's expiry is
// set by the database's clock (now() + ttl) when it is granted or renewed;
// the holder counts its own copy from the moment it *sent* that request, by
// its own monotonic clock, and stops serving the device when that copy
// runs out. Its copy therefore ends no later than the database's, and a
// takeover waits for the database's. Each takeover raises the lease's epoch
// (the fencing token), and a session is opened only by the device's holder
// of the current epoch (OpenSession checks the lease when one exists).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// Lease is one broker's hold on one device.
type Lease struct {
	DeviceID string
	BrokerID string
	Epoch    int64
	// Expires is the database's expiry; a holder keeps its own, shorter,
	// copy (see the package comment above).
	Expires time.Time
}

// ErrLeaseHeld is wrapped by AcquireLease's refusal when another broker's
// lease on the device has not expired; the *LeaseHeldError names it.
var ErrLeaseHeld = errors.New("device held by another broker")

// LeaseHeldError is AcquireLease's refusal: the device is held by Holder
// until Expires (the database's clock).
type LeaseHeldError struct {
	Device  string
	Holder  string
	Expires time.Time
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("device %s is held by broker %s until %s", e.Device, e.Holder, e.Expires.Format(time.RFC3339))
}

func (e *LeaseHeldError) Unwrap() error { return ErrLeaseHeld }

func validLeaseArgs(brokerID string, ttl time.Duration) error {
	if brokerID == "" {
		return fieldpass.Errorf(fieldpass.EINVALID, "broker id is empty")
	}
	if err := validateText("broker id", brokerID, maxBrokerIDLen); err != nil {
		return err
	}
	if ttl < time.Second {
		return fieldpass.Errorf(fieldpass.EINVALID, "lease ttl %s is under a second", ttl)
	}
	return nil
}

// AcquireLease gives brokerID the lease on device deviceID for ttl: a new
// lease, a renewal of its own, or a takeover of one that has expired (epoch
// raised). Another broker's live lease is refused with *LeaseHeldError.
func (db *DB) AcquireLease(ctx context.Context, deviceID, brokerID string, ttl time.Duration) (Lease, error) {
	if !uuidRE.MatchString(deviceID) {
		return Lease{}, fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", deviceID)
	}
	if err := validLeaseArgs(brokerID, ttl); err != nil {
		return Lease{}, err
	}
	l := Lease{DeviceID: deviceID}
	err := db.pool.QueryRow(ctx, `
		INSERT INTO device_leases AS l (device_id, broker_id, epoch, expires_at)
		VALUES ($1::uuid, $2, 1, now() + $3::bigint * interval '1 microsecond')
		ON CONFLICT (device_id) DO UPDATE
		   SET epoch = CASE WHEN l.broker_id = excluded.broker_id AND l.expires_at > now() THEN l.epoch ELSE l.epoch + 1 END,
		       broker_id = excluded.broker_id,
		       expires_at = excluded.expires_at
		 WHERE l.broker_id = excluded.broker_id OR l.expires_at <= now()
		RETURNING broker_id, epoch, expires_at`,
		deviceID, brokerID, ttl.Microseconds()).Scan(&l.BrokerID, &l.Epoch, &l.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		held := &LeaseHeldError{}
		err = db.pool.QueryRow(ctx, `
			SELECT d.name, l.broker_id, l.expires_at FROM device_leases l JOIN devices d ON d.id = l.device_id
			WHERE l.device_id = $1::uuid`, deviceID).Scan(&held.Device, &held.Holder, &held.Expires)
		if err != nil {
			return Lease{}, fmt.Errorf("read lease of %s: %w", deviceID, err)
		}
		held.Expires = held.Expires.UTC()
		return Lease{}, held
	}
	if err != nil {
		return Lease{}, fmt.Errorf("acquire lease of %s: %w", deviceID, err)
	}
	l.Expires = l.Expires.UTC()
	return l, nil
}

// RenewLeases extends, in one statement, the leases brokerID holds on
// leases (by device id and epoch) for ttl, and returns those it still
// holds, with their new expiry; a lease missing from the result was lost
// (expired and taken over) and must no longer be served.
func (db *DB) RenewLeases(ctx context.Context, brokerID string, leases []Lease, ttl time.Duration) ([]Lease, error) {
	if err := validLeaseArgs(brokerID, ttl); err != nil {
		return nil, err
	}
	if len(leases) == 0 {
		return nil, nil
	}
	ids := make([]string, len(leases))
	epochs := make([]int64, len(leases))
	for i, l := range leases {
		ids[i], epochs[i] = l.DeviceID, l.Epoch
	}
	rows, err := db.pool.Query(ctx, `
		UPDATE device_leases l SET expires_at = now() + $2::bigint * interval '1 microsecond'
		FROM unnest($3::uuid[], $4::bigint[]) AS h(device_id, epoch)
		WHERE l.device_id = h.device_id AND l.epoch = h.epoch AND l.broker_id = $1 AND l.expires_at > now()
		RETURNING l.device_id::text, l.broker_id, l.epoch, l.expires_at`,
		brokerID, ttl.Microseconds(), ids, epochs)
	if err != nil {
		return nil, fmt.Errorf("renew leases: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Lease, error) {
		var l Lease
		err := r.Scan(&l.DeviceID, &l.BrokerID, &l.Epoch, &l.Expires)
		l.Expires = l.Expires.UTC()
		return l, err
	})
}

// ReleaseLease ends brokerID's lease on deviceID of epoch now (a clean
// disconnect, a broker stopping), so another broker may take the device at
// once. Releasing a lease no longer held does nothing.
func (db *DB) ReleaseLease(ctx context.Context, deviceID, brokerID string, epoch int64) error {
	_, err := db.pool.Exec(ctx, `
		UPDATE device_leases SET expires_at = now()
		WHERE device_id = $1::uuid AND broker_id = $2 AND epoch = $3 AND expires_at > now()`,
		deviceID, brokerID, epoch)
	if err != nil {
		return fmt.Errorf("release lease of %s: %w", deviceID, err)
	}
	return nil
}

// DeviceHolder returns the lease on deviceID if a broker holds it now by
// the database's clock; ok is false when no broker does.
func (db *DB) DeviceHolder(ctx context.Context, deviceID string) (l Lease, ok bool, err error) {
	if !uuidRE.MatchString(deviceID) {
		return Lease{}, false, fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", deviceID)
	}
	err = db.pool.QueryRow(ctx, `
		SELECT device_id::text, broker_id, epoch, expires_at FROM device_leases
		WHERE device_id = $1::uuid AND expires_at > now()`, deviceID).Scan(&l.DeviceID, &l.BrokerID, &l.Epoch, &l.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return Lease{}, false, nil
	}
	if err != nil {
		return Lease{}, false, fmt.Errorf("read lease of %s: %w", deviceID, err)
	}
	l.Expires = l.Expires.UTC()
	return l, true, nil
}

// Broker is one row of the broker roll.
type Broker struct {
	ID         string
	PeerAddr   string // where other brokers carry a person's connect to it
	Started    time.Time
	AliveUntil time.Time
	Stopped    time.Time // zero while running
}

// BrokerAlive records that brokerID, reachable by other brokers at peerAddr,
// is alive for ttl more (the database's clock); started is when its run
// began. A broker calls it on start and then every ttl/3.
func (db *DB) BrokerAlive(ctx context.Context, brokerID, peerAddr string, started time.Time, ttl time.Duration) error {
	if err := validLeaseArgs(brokerID, ttl); err != nil {
		return err
	}
	if err := validateText("peer address", peerAddr, 2048); err != nil {
		return err
	}
	_, err := db.pool.Exec(ctx, `
		INSERT INTO brokers (id, peer_addr, started_at, alive_until) VALUES ($1, $2, $3, now() + $4::bigint * interval '1 microsecond')
		ON CONFLICT (id) DO UPDATE SET peer_addr = excluded.peer_addr, started_at = excluded.started_at,
		       alive_until = excluded.alive_until, stopped_at = NULL`,
		brokerID, peerAddr, started.UTC(), ttl.Microseconds())
	if err != nil {
		return fmt.Errorf("record broker %s alive: %w", brokerID, err)
	}
	return nil
}

// BrokerStopped records a clean stop of brokerID and ends its leases, so
// that its devices may be taken at once.
func (db *DB) BrokerStopped(ctx context.Context, brokerID string) error {
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE brokers SET stopped_at = now(), alive_until = now() WHERE id = $1`, brokerID); err != nil {
			return fmt.Errorf("record broker %s stopped: %w", brokerID, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE device_leases SET expires_at = now() WHERE broker_id = $1 AND expires_at > now()`, brokerID); err != nil {
			return fmt.Errorf("release leases of broker %s: %w", brokerID, err)
		}
		return nil
	})
}

// Brokers returns the broker roll, by id.
func (db *DB) Brokers(ctx context.Context) ([]Broker, error) {
	rows, err := db.pool.Query(ctx, `SELECT id, peer_addr, started_at, alive_until, stopped_at FROM brokers ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list brokers: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Broker, error) {
		var b Broker
		var stopped *time.Time
		err := r.Scan(&b.ID, &b.PeerAddr, &b.Started, &b.AliveUntil, &stopped)
		b.Started, b.AliveUntil = b.Started.UTC(), b.AliveUntil.UTC()
		if stopped != nil {
			b.Stopped = stopped.UTC()
		}
		return b, err
	})
}

// ClaimDeadBroker lets one live broker take over the records of a broker
// that stopped renewing without a clean stop: it marks brokerID stopped and
// reports true to exactly one caller (the row lock decides), which then
// closes the dead broker's open sessions once and calls its devices back.
func (db *DB) ClaimDeadBroker(ctx context.Context, brokerID string) (bool, error) {
	tag, err := db.pool.Exec(ctx, `
		UPDATE brokers SET stopped_at = now()
		WHERE id = $1 AND stopped_at IS NULL AND alive_until <= now()`, brokerID)
	if err != nil {
		return false, fmt.Errorf("claim broker %s: %w", brokerID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// LeasesReady reports whether the database has the lease tables (its
// schema is recent enough for several brokers): a broker of a fleet is
// not ready without them.
func (db *DB) LeasesReady(ctx context.Context) error {
	var ok bool
	if err := db.pool.QueryRow(ctx, `SELECT to_regclass('device_leases') IS NOT NULL AND to_regclass('brokers') IS NOT NULL`).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return errors.New("the lease tables are missing: run fieldpass-broker migrate")
	}
	return nil
}

// HolderAddr returns the broker that holds device deviceID now, by the
// database's clock, and the address of its link, in one query; ok is false
// when no running broker with a link holds it.
func (db *DB) HolderAddr(ctx context.Context, deviceID string) (brokerID, peerAddr string, ok bool, err error) {
	if !uuidRE.MatchString(deviceID) {
		return "", "", false, fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", deviceID)
	}
	err = db.pool.QueryRow(ctx, `
		SELECT b.id, b.peer_addr FROM device_leases l JOIN brokers b ON b.id = l.broker_id
		WHERE l.device_id = $1::uuid AND l.expires_at > now() AND b.stopped_at IS NULL AND b.peer_addr <> ''`,
		deviceID).Scan(&brokerID, &peerAddr)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("read the holder of %s: %w", deviceID, err)
	}
	return brokerID, peerAddr, true, nil
}
