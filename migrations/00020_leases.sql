-- Several brokers, one fleet: who holds each device, and which brokers are
-- alive.
--
-- A device is held by exactly one broker at a time. The holder renews its
-- lease through this table (DeviceLeases in postgres/lease.go); a lease is
-- taken over only once it has expired by the database's clock, and every
-- takeover raises epoch, the fencing token: a broker that lost its lease
-- (a partition, a long pause) has already stopped serving the device by its
-- own clock, which it started before asking for the renewal, so its lease
-- ends for it no later than it ends here.
--
-- brokers lists the brokers that share the fleet, their internal address
-- (for carrying a person's connect to the device's holder) and when each
-- last said it was alive, so that a live broker can close the records of a
-- dead one once.

-- +goose Up
CREATE TABLE brokers (
    id            text PRIMARY KEY CHECK (id <> '' AND length(id) <= 255),
    peer_addr      text NOT NULL DEFAULT '' CHECK (length(peer_addr) <= 2048),
    started_at    timestamptz NOT NULL,
    alive_until   timestamptz NOT NULL,
    stopped_at    timestamptz
);

CREATE TABLE device_leases (
    device_id   uuid PRIMARY KEY REFERENCES devices (id),
    broker_id   text NOT NULL,
    epoch       bigint NOT NULL CHECK (epoch > 0),
    expires_at  timestamptz NOT NULL
);

CREATE INDEX device_leases_broker ON device_leases (broker_id);

-- +goose Down
DROP TABLE device_leases;
DROP TABLE brokers;
