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
	// A lease taken ends the device's callback, if a dead broker's device
	// was assigned to a live one to call back (AssignCallbacks): it is back.
	err := db.pool.QueryRow(ctx, `
		WITH got AS (
			INSERT INTO device_leases AS l (device_id, broker_id, epoch, expires_at)
			VALUES ($1::uuid, $2, 1, now() + $3::bigint * interval '1 microsecond')
			ON CONFLICT (device_id) DO UPDATE
			   SET epoch = CASE WHEN l.broker_id = excluded.broker_id AND l.expires_at > now() THEN l.epoch ELSE l.epoch + 1 END,
			       broker_id = excluded.broker_id,
			       expires_at = excluded.expires_at
			 WHERE l.broker_id = excluded.broker_id OR l.expires_at <= now()
			RETURNING device_id, broker_id, epoch, expires_at
		), done AS (
			DELETE FROM device_callbacks c USING got WHERE c.device_id = got.device_id
		)
		SELECT broker_id, epoch, expires_at FROM got`,
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

// CallbacksChannel is the LISTEN/NOTIFY channel on which AssignCallbacks
// names each broker given devices to call back (the payload is its id).
// The notification only hastens the read: the rows are the truth.
const CallbacksChannel = "fieldpass_callbacks"

// ListenCallbacksApplicationName is the application_name of the connection
// ListenCallbacks holds.
const ListenCallbacksApplicationName = "fieldpass listen callbacks"

// ListenCallbacks calls fn with the id of each broker that AssignCallbacks
// gave devices to call back, and with "" whenever notifications may have
// been missed (see ListenDevices, whose rules it follows).
func (db *DB) ListenCallbacks(ctx context.Context, fn func(brokerID string)) error {
	return db.listen(ctx, CallbacksChannel, ListenCallbacksApplicationName, fn)
}

// Callback is a dead broker's device assigned to a live broker, which calls
// it back (nudges it) at the endpoint where it was last heard.
type Callback struct {
	DeviceID string
	BrokerID string // the live broker that calls it back
	Endpoint string // host:port
	// Taken is when BrokerID took it to nudge the device (zero: not yet).
	Taken time.Time
}

// BrokerLoad is a live broker of the roll and how many devices it holds.
type BrokerLoad struct {
	ID      string
	Devices int
}

// BrokerLoads returns the brokers alive now by the database's clock, not
// stopped or claimed, with the number of devices each holds a live lease
// on, by id.
func (db *DB) BrokerLoads(ctx context.Context) ([]BrokerLoad, error) {
	rows, err := db.pool.Query(ctx, `
		SELECT b.id, count(l.device_id) FROM brokers b
		LEFT JOIN device_leases l ON l.broker_id = b.id AND l.expires_at > now()
		WHERE b.stopped_at IS NULL AND b.alive_until > now()
		GROUP BY b.id ORDER BY b.id`)
	if err != nil {
		return nil, fmt.Errorf("read the live brokers' loads: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (BrokerLoad, error) {
		var l BrokerLoad
		err := r.Scan(&l.ID, &l.Devices)
		return l, err
	})
}

// AssignCallbacks records, in one transaction, that the devices of cbs,
// held by deadBroker when it died, are each called back by cbs' BrokerID
// (replacing an earlier assignment of the same device), and notifies each
// of those brokers on CallbacksChannel at commit.
func (db *DB) AssignCallbacks(ctx context.Context, deadBroker string, cbs []Callback) error {
	if err := validateText("broker id", deadBroker, maxBrokerIDLen); err != nil {
		return err
	}
	if len(cbs) == 0 {
		return nil
	}
	ids := make([]string, len(cbs))
	brokers := make([]string, len(cbs))
	eps := make([]string, len(cbs))
	for i, c := range cbs {
		if !uuidRE.MatchString(c.DeviceID) {
			return fieldpass.Errorf(fieldpass.EINVALID, "invalid device id %q", c.DeviceID)
		}
		if c.BrokerID == "" {
			return fieldpass.Errorf(fieldpass.EINVALID, "callback of device %s names no broker", c.DeviceID)
		}
		if err := validateText("broker id", c.BrokerID, maxBrokerIDLen); err != nil {
			return err
		}
		ids[i], brokers[i], eps[i] = c.DeviceID, c.BrokerID, c.Endpoint
	}
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			INSERT INTO device_callbacks (device_id, dead_broker, broker_id, endpoint, assigned_at)
			SELECT c.device_id, $1, c.broker_id, c.endpoint, now()
			FROM unnest($2::uuid[], $3::text[], $4::text[]) AS c(device_id, broker_id, endpoint)
			ON CONFLICT (device_id) DO UPDATE SET dead_broker = excluded.dead_broker, broker_id = excluded.broker_id,
			       endpoint = excluded.endpoint, assigned_at = excluded.assigned_at, taken_at = NULL`,
			deadBroker, ids, brokers, eps)
		if err != nil {
			return fmt.Errorf("assign the devices of broker %s: %w", deadBroker, err)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, b) FROM (SELECT DISTINCT unnest($2::text[]) AS b) AS d`,
			CallbacksChannel, brokers); err != nil {
			return fmt.Errorf("notify the brokers calling back the devices of %s: %w", deadBroker, err)
		}
		return nil
	})
}

// TakeCallbacks returns the callbacks assigned to brokerID that it has not
// taken yet, and marks them taken. A taken row stays until the device's
// lease is taken (by any broker), so that if brokerID dies before its
// devices are back, its own sweep finds them (CallbacksOf).
func (db *DB) TakeCallbacks(ctx context.Context, brokerID string) ([]Callback, error) {
	rows, err := db.pool.Query(ctx, `
		UPDATE device_callbacks SET taken_at = now()
		WHERE broker_id = $1 AND taken_at IS NULL
		RETURNING device_id::text, broker_id, endpoint, taken_at`, brokerID)
	if err != nil {
		return nil, fmt.Errorf("take the callbacks of broker %s: %w", brokerID, err)
	}
	return collectCallbacks(rows)
}

// CallbacksOf returns the callbacks assigned to brokerID whose devices are
// not back yet (taken or not): when brokerID died, they must be assigned
// to another live broker.
func (db *DB) CallbacksOf(ctx context.Context, brokerID string) ([]Callback, error) {
	rows, err := db.pool.Query(ctx, `
		SELECT device_id::text, broker_id, endpoint, taken_at FROM device_callbacks WHERE broker_id = $1 ORDER BY device_id`, brokerID)
	if err != nil {
		return nil, fmt.Errorf("read the callbacks of broker %s: %w", brokerID, err)
	}
	return collectCallbacks(rows)
}

// PruneCallbacks deletes the callbacks assigned before now - age: their
// devices never came back, and a broker that starts nudges its own anyway.
func (db *DB) PruneCallbacks(ctx context.Context, age time.Duration) (int64, error) {
	tag, err := db.pool.Exec(ctx, `
		DELETE FROM device_callbacks WHERE assigned_at < now() - $1::bigint * interval '1 microsecond'`, age.Microseconds())
	if err != nil {
		return 0, fmt.Errorf("prune old callbacks: %w", err)
	}
	return tag.RowsAffected(), nil
}

func collectCallbacks(rows pgx.Rows) ([]Callback, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Callback, error) {
		var c Callback
		var taken *time.Time
		err := r.Scan(&c.DeviceID, &c.BrokerID, &c.Endpoint, &taken)
		if taken != nil {
			c.Taken = taken.UTC()
		}
		return c, err
	})
}

// DevicesToCallBack returns the devices the dead broker deadBroker must
// have called back, by id, each with the endpoint where it was last heard:
// those whose lease it held (or gave back) within the last recent, and
// those it was itself to call back for an earlier dead broker and that are
// not back yet. The lease, not the presence row, says what it held: a
// device it had just taken may have died with it before its presence was
// written. Devices with no known endpoint, or no longer active, are left
// out: there is nowhere to call them.
func (db *DB) DevicesToCallBack(ctx context.Context, deadBroker string, recent time.Duration) ([]Callback, error) {
	rows, err := db.pool.Query(ctx, `
		SELECT DISTINCT ON (x.device_id) x.device_id::text, '', x.endpoint, NULL::timestamptz FROM (
			SELECT l.device_id, coalesce(d.endpoint, c.endpoint, '') AS endpoint, 0 AS pref
			FROM device_leases l JOIN devices d ON d.id = l.device_id AND d.state = 'active'
			LEFT JOIN device_callbacks c ON c.device_id = l.device_id
			WHERE l.broker_id = $1 AND l.expires_at > now() - $2::bigint * interval '1 microsecond'
			UNION ALL
			SELECT c.device_id, coalesce(d.endpoint, c.endpoint), 1
			FROM device_callbacks c JOIN devices d ON d.id = c.device_id AND d.state = 'active'
			WHERE c.broker_id = $1
		) AS x WHERE x.endpoint <> '' ORDER BY x.device_id, x.pref`, deadBroker, recent.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("read the devices of broker %s to call back: %w", deadBroker, err)
	}
	return collectCallbacks(rows)
}
